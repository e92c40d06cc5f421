// `node bench/cpu-profile.js <file.cpuprofile> [top]`: where a broker child's CPU went, from a
// profile written with BENCH_CPU_PROF=<dir>. Prints self time by area (signalbox's own
// folders, each dependency, Node internals, GC) and the top functions by self time.
import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/cpu-profile.js <file.cpuprofile> [top functions, default 25]');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8'));

// Self time per node: each sample is charged to its node for the time until the next sample.
const selfUs = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i + 1] ?? 0;
  selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + dt);
}
let totalUs = 0;
let idleUs = 0;
const byArea = new Map();
const byFunction = new Map();
for (const node of profile.nodes) {
  const us = selfUs.get(node.id) ?? 0;
  if (us === 0) continue;
  const { functionName, url, lineNumber } = node.callFrame;
  if (functionName === '(idle)') {
    idleUs += us;
    continue;
  }
  totalUs += us;
  const area = areaOf(functionName, url);
  byArea.set(area, (byArea.get(area) ?? 0) + us);
  const name = `${functionName || '(anonymous)'}  ${shortUrl(url)}${url ? `:${lineNumber + 1}` : ''}`;
  byFunction.set(name, (byFunction.get(name) ?? 0) + us);
}

/** signalbox's own folder (dist/engine, dist/broker, ...), a dependency's name, or Node / V8. */
function areaOf(functionName, url) {
  if (functionName === '(garbage collector)') return 'GC';
  if (functionName === '(program)' || functionName === '(root)') return 'V8 / native (program)';
  if (!url) return 'native';
  const dep = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (dep) return dep[1];
  const own = url.match(/\/dist\/([^/]+)\//);
  if (own) return `signalbox ${own[1]}/`;
  if (url.startsWith('node:')) return `node ${url.slice(5).split('/')[0]}`;
  return shortUrl(url);
}

function shortUrl(url) {
  return url.replace(/^file:\/\//, '').replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/');
}

const pct = (us) => `${((us / totalUs) * 100).toFixed(1).padStart(5)}%`;
const ms = (us) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
console.log(`${file}\nbusy ${ms(totalUs)}, idle ${ms(idleUs)}\n\nself time by area:`);
for (const [area, us] of [...byArea].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(us)} ${ms(us)}  ${area}`);
console.log(`\ntop ${top} functions by self time:`);
for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us)} ${ms(us)}  ${name}`);
