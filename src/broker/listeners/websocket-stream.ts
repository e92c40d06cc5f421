import { Duplex } from 'node:stream';
import { WebSocket } from 'ws';

/**
 * A WebSocket carrying MQTT as a byte stream for a Connection. MQTT packets may span
 * WebSocket messages and one message may hold several packets [MQTT-6.0.0-2]; the
 * connection's framer reassembles them. A text message closes the connection
 * [MQTT-6.0.0-1]. Everything written in one tick (the connection corks its writes) leaves
 * as one binary message.
 */
export class WebSocketStream extends Duplex {
  constructor(private readonly ws: WebSocket) {
    super({ allowHalfOpen: false });
    ws.on('message', this.onMessage);
    ws.on('error', this.onError);
    ws.on('close', this.onClose);
  }

  private readonly onMessage = (data: Buffer, isBinary: boolean): void => {
    if (!isBinary) {
      // [MQTT-6.0.0-1] MQTT is carried in binary frames only.
      this.ws.close(1003, 'MQTT is carried in binary frames');
      this.destroy(new Error('text WebSocket frame: MQTT is carried in binary frames'));
      return;
    }
    // Back-pressure: stop reading the socket until the connection has taken what it has.
    if (!this.push(data)) this.ws.pause();
  };

  private readonly onError = (err: Error): void => {
    this.destroy(err);
  };

  private readonly onClose = (): void => {
    this.push(null);
    this.destroy();
  };

  override _read(): void {
    this.ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.ws.send(chunk, { binary: true }, callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    const data = chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk));
    this.ws.send(data, { binary: true }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    // A normal close handshake; the data written before goes out first.
    this.ws.close(1000);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.ws.off('message', this.onMessage);
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    callback(error);
  }
}
