import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/issues.js';
import { loadProject } from '../../src/config/load.js';
import { createConnectorRegistry } from '../../src/outputs/connectors.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';

/**
 * docker-compose.yml, the Dockerfile and the example signalbox config under docker/ are
 * checked without a Docker engine: every file they name exists, every variable has a value,
 * ports and service names agree across the files, and the signalbox config and rules load.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const at = (...p: string[]) => path.join(ROOT, ...p);
const read = (...p: string[]) => readFileSync(at(...p), 'utf8');

interface Service {
  image?: string;
  build?: { context: string; dockerfile?: string };
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: string[];
}
const composeText = read('docker-compose.yml');
const compose = parse(composeText) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const services = compose.services;
const sbConfig = parse(read('docker', 'signalbox.yaml')) as {
  broker: { listeners: { host: string; port: number; anonymous?: boolean }[] };
  storage: { path: string };
  rules: string;
  outputs: Record<string, { type: string; url: string; token?: string }>;
};
const envExample = Object.fromEntries(
  read('.env.example')
    .split('\n')
    .filter((l) => /^[A-Z_][A-Z0-9_]*=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
const mosquittoListener = Number(/^listener\s+(\d+)\s*$/m.exec(read('docker', 'mosquitto', 'mosquitto.conf'))?.[1]);
const datasource = (parse(read('docker', 'grafana', 'provisioning', 'datasources', 'influxdb.yaml')) as { datasources: Record<string, unknown>[] }).datasources[0]!;

/** `host:container` port mappings of a service, as numbers, with the host address. */
function ports(service: string): { address: string | undefined; host: number; container: number }[] {
  return (services[service]?.ports ?? []).map((p) => {
    const parts = String(p).split(':');
    const [address, host, container] = parts.length === 3 ? parts : [undefined, ...parts];
    return { address, host: Number(host), container: Number(container) };
  });
}

/** Bind mounts (`./host:/container[:ro]`) of a service. */
function binds(service: string): { host: string; target: string }[] {
  return (services[service]?.volumes ?? []).filter((v) => v.startsWith('./') || v.startsWith('/')).map((v) => {
    const [host, target] = v.split(':');
    return { host: host!, target: target! };
  });
}

/** The values compose would use: `${VAR:-default}` / `${VAR-default}` defaults, overridden by .env.example. */
function composeEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of composeText.matchAll(/\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}/g)) if (m[2] !== undefined) env[m[1]!] = m[2];
  return { ...env, ...envExample };
}

/** A service's environment as the container would see it, compose variables substituted. */
function containerEnv(service: string): Record<string, string> {
  const vars = composeEnv();
  return Object.fromEntries(Object.entries(services[service]?.environment ?? {}).map(([k, v]) => [k, String(v).replace(/\$\{([A-Z_][A-Z0-9_]*)(?::?-[^}]*)?\}/g, (_m, name: string) => vars[name] ?? '')]));
}

describe('docker-compose.yml', () => {
  it('starts signalbox (built here), Mosquitto 2, InfluxDB 2 and Grafana', () => {
    expect(Object.keys(services).sort()).toEqual(['grafana', 'influxdb', 'mosquitto', 'signalbox']);
    expect(services['signalbox']!.build).toMatchObject({ context: '.', dockerfile: 'Dockerfile' });
    expect(services['mosquitto']!.image).toBe('eclipse-mosquitto:2');
    expect(services['influxdb']!.image).toBe('influxdb:2');
    expect(services['grafana']!.image).toMatch(/^grafana\/grafana(:|$)/);
  });

  it('names only files and folders that exist', () => {
    const build = services['signalbox']!.build!;
    expect(statSync(at(build.context)).isDirectory()).toBe(true);
    expect(existsSync(at(build.context, build.dockerfile ?? 'Dockerfile'))).toBe(true);
    const mounts = Object.keys(services).flatMap((s) => binds(s));
    expect(mounts.length).toBeGreaterThanOrEqual(4);
    for (const m of mounts) expect(existsSync(at(m.host)), `${m.host} (mounted at ${m.target})`).toBe(true);
    // Named volumes are declared.
    for (const s of Object.values(services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (!source.startsWith('.') && !source.startsWith('/')) expect(Object.keys(compose.volumes), `volume ${source}`).toContain(source);
      }
    }
  });

  it('gives every ${VAR} a default or a value in .env.example, and .env.example the same values as the defaults', () => {
    const used = [...composeText.matchAll(/\$\{([^}]*)\}/g)].map((m) => m[1]!);
    expect(used.length).toBeGreaterThan(5);
    for (const expr of used) {
      const name = /^[A-Z_][A-Z0-9_]*/.exec(expr)?.[0];
      expect(name, `\${${expr}}`).toBeDefined();
      const hasDefault = /^[A-Z_][A-Z0-9_]*:?-/.test(expr);
      expect(hasDefault || envExample[name!] !== undefined, `\${${expr}} has no default and is not in .env.example`).toBe(true);
      if (hasDefault && envExample[name!] !== undefined) expect(expr.replace(/^[A-Z_][A-Z0-9_]*:?-/, ''), `default of ${name}`).toBe(envExample[name!]);
    }
    // InfluxDB refuses an admin password shorter than 8 characters at setup.
    expect(composeEnv()['INFLUX_ADMIN_PASSWORD']!.length).toBeGreaterThanOrEqual(8);
  });

  it('publishes every port on 127.0.0.1 only, matching the ports the services listen on', () => {
    for (const s of Object.keys(services)) for (const p of ports(s)) expect(p.address, `${s} ${p.host}:${p.container}`).toBe('127.0.0.1');
    const listener = sbConfig.broker.listeners[0]!;
    expect(ports('signalbox').map((p) => p.container)).toEqual([listener.port]);
    expect(mosquittoListener).toBe(1883);
    expect(ports('mosquitto').map((p) => p.container)).toEqual([mosquittoListener]);
    expect(ports('influxdb').map((p) => p.container)).toEqual([8086]);
    expect(ports('grafana').map((p) => p.container)).toEqual([3000]);
    const hostPorts = Object.keys(services).flatMap((s) => ports(s).map((p) => p.host));
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it('sets up InfluxDB with the org, bucket and token signalbox and Grafana use', () => {
    const influx = containerEnv('influxdb');
    expect(influx).toMatchObject({ DOCKER_INFLUXDB_INIT_MODE: 'setup' });
    for (const k of ['USERNAME', 'PASSWORD', 'ORG', 'BUCKET', 'ADMIN_TOKEN']) expect(influx[`DOCKER_INFLUXDB_INIT_${k}`], k).toBeTruthy();
    const sb = containerEnv('signalbox');
    const grafana = containerEnv('grafana');
    for (const env of [sb, grafana]) {
      expect(env['INFLUX_TOKEN']).toBe(influx['DOCKER_INFLUXDB_INIT_ADMIN_TOKEN']);
      expect(env['INFLUX_ORG']).toBe(influx['DOCKER_INFLUXDB_INIT_ORG']);
      expect(env['INFLUX_BUCKET']).toBe(influx['DOCKER_INFLUXDB_INIT_BUCKET']);
    }
    expect(grafana['GF_SECURITY_ADMIN_PASSWORD']).toBeTruthy();
  });

  it('provisions Grafana with a Flux data source at the influxdb service, its token from the environment', () => {
    expect(binds('grafana')).toContainEqual({ host: './docker/grafana/provisioning', target: '/etc/grafana/provisioning' });
    const url = new URL(String(datasource['url']));
    expect(url.hostname).toBe('influxdb');
    expect(Number(url.port)).toBe(ports('influxdb')[0]!.container);
    expect(datasource).toMatchObject({ type: 'influxdb', access: 'proxy', jsonData: { version: 'Flux', organization: '${INFLUX_ORG}', defaultBucket: '${INFLUX_BUCKET}' }, secureJsonData: { token: '${INFLUX_TOKEN}' } });
    const grafana = containerEnv('grafana');
    for (const name of ['INFLUX_ORG', 'INFLUX_BUCKET', 'INFLUX_TOKEN']) expect(grafana[name], name).toBeTruthy();
  });
});

describe('the example signalbox config (docker/signalbox.yaml)', () => {
  it('is mounted where the Dockerfile\'s CMD reads it, with its rules folder and the data volume', () => {
    const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(read('Dockerfile'))?.[1];
    const args = JSON.parse(cmd!) as string[];
    const configPath = args[args.indexOf('--config') + 1]!;
    expect(binds('signalbox')).toContainEqual({ host: './docker/signalbox.yaml', target: configPath });
    expect(binds('signalbox')).toContainEqual({ host: './docker/rules', target: path.posix.join(path.posix.dirname(configPath), sbConfig.rules) });
    expect(services['signalbox']!.volumes).toContain(`signalbox-data:${path.posix.dirname(sbConfig.storage.path)}`);
  });

  it('listens on all interfaces of the container, anonymous only because the port is published on loopback', () => {
    expect(sbConfig.broker.listeners).toEqual([{ type: 'mqtt', host: '0.0.0.0', port: 1883, anonymous: true }]);
  });

  it('bridges to the mosquitto service and writes to the influxdb service', () => {
    const bridge = new URL(sbConfig.outputs['remote']!.url);
    expect(sbConfig.outputs['remote']!.type).toBe('bridge');
    expect([bridge.protocol, bridge.hostname, Number(bridge.port)]).toEqual(['mqtt:', 'mosquitto', mosquittoListener]);
    const tsdb = sbConfig.outputs['tsdb']!;
    expect(tsdb.type).toBe('influx');
    const influx = new URL(tsdb.url);
    expect([influx.hostname, Number(influx.port)]).toEqual(['influxdb', ports('influxdb')[0]!.container]);
    expect(tsdb.token).toBe('${env:INFLUX_TOKEN}');
    // Every ${env:X} of the config is set in the signalbox container.
    const env = containerEnv('signalbox');
    for (const m of read('docker', 'signalbox.yaml').matchAll(/\$\{env:([A-Z_][A-Z0-9_]*)\}/g)) expect(env[m[1]!], m[1]).toBeTruthy();
  });

  const env = containerEnv('signalbox');
  const load = () => {
    try {
      return loadProject(at('docker', 'signalbox.yaml'), { explicit: true, registry: createOutputRegistry(), connectors: createConnectorRegistry(), env });
    } catch (err) {
      if (err instanceof ConfigError) throw new Error(`signalbox check failed:\n${err.message}`);
      throw err;
    }
  };

  it('passes signalbox check with the built-in outputs', () => {
    const project = load();
    expect(project.compiled.rules.map((r) => r.id)).toEqual(expect.arrayContaining(['temperature', 'humidity']));
    expect(Object.keys(project.config.outputs).sort()).toEqual(['remote', 'tsdb']);
  });

});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  const lines = dockerfile.split('\n').filter((l) => !l.trim().startsWith('#'));
  const instructions = (name: string) => lines.filter((l) => new RegExp(`^${name}\\s`, 'i').test(l));

  it('builds on Node 20 with the tools better-sqlite3 needs, npm ci and npm run build', () => {
    expect(instructions('FROM').length).toBeGreaterThanOrEqual(1);
    for (const from of instructions('FROM')) expect(from).toMatch(/^FROM node:20[-.\w]*/);
    expect(dockerfile).toMatch(/apt-get install[^\n]*python3[^\n]*make[^\n]*g\+\+/);
    expect(dockerfile).toMatch(/RUN npm ci\b/);
    expect(dockerfile).toMatch(/npm rebuild better-sqlite3/);
    expect(dockerfile).toMatch(/RUN npm run build\b/);
    expect(instructions('WORKDIR')).toContain('WORKDIR /app');
  });

  it('runs as a user that is not root, with the data volume and the MQTT port', () => {
    const users = instructions('USER');
    expect(users.length).toBeGreaterThanOrEqual(1);
    expect(users.at(-1)).not.toMatch(/^USER\s+(root|0)(:|\s|$)/);
    expect(dockerfile).toMatch(/chown node:node \/app\/data/);
    expect(dockerfile).toMatch(/^VOLUME \["\/app\/data"\]$/m);
    expect(instructions('EXPOSE')).toEqual([`EXPOSE ${sbConfig.broker.listeners[0]!.port}`]);
  });

  it('starts `node dist/cli/main.js run --config …`', () => {
    const cmd = JSON.parse(/^CMD\s+(\[.*\])\s*$/m.exec(dockerfile)![1]!) as string[];
    expect(cmd.slice(0, 4)).toEqual(['node', 'dist/cli/main.js', 'run', '--config']);
    expect(cmd[4]).toMatch(/\.yaml$/);
  });

  it('copies only what .dockerignore lets into the build context', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src']) expect(ignored).not.toContain(needed);
    for (const copied of dockerfile.matchAll(/^COPY (?!--from)([^\n]+) \S+$/gm)) {
      for (const source of copied[1]!.split(/\s+/)) expect(existsSync(at(source)), source).toBe(true);
    }
    for (const heavy of ['node_modules', 'dist', '.git', 'data', '.env']) expect(ignored).toContain(heavy);
  });
});
