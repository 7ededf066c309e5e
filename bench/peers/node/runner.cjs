// Node BullMQ peer: the four benchmark workloads, same message and measurement as bench/common.py.
//
// Configuration (BullMQ's documented throughput knobs): Worker `concurrency` = --parallel, jobs with
// `removeOnComplete: true` / `removeOnFail: true`, `Queue.addBulk` for batches, BullMQ's default
// ioredis connections (one per Queue, two per Worker). The worker's `completed` event (emitted after
// the job is moved to completed in Redis) counts acknowledgements.
'use strict';

const { spawn } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { Queue, Worker } = require('bullmq');

const RESULT_PREFIX = 'BENCH_RESULT ';
const QUEUE_NAME = 'bench';
const JOB_OPTS = { removeOnComplete: true, removeOnFail: true };

function parseArgs(argv) {
  const args = {
    url: '', workload: '', n: 50000, concurrency: 100, batch: 1000, parallel: 100,
    rate: 5000, duration: 10, warmup: 2, variant: '', timeout: 300, role: 'main',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args)) throw new Error(`unknown option ${argv[i]}`);
    const value = argv[i + 1];
    args[key] = typeof args[key] === 'number' ? Number(value) : value;
  }
  if (!args.url || !args.workload) throw new Error('--url and --workload are required');
  return args;
}

const message = (n) => ({ userId: n, eventId: 1 });
const now = () => performance.now() / 1000; // seconds, monotonic
const wallclock = () => (performance.timeOrigin + performance.now()) / 1000; // seconds, epoch
const sleep = (s) => new Promise((r) => (s > 0 ? setTimeout(r, s * 1000) : setImmediate(r)));
const emit = (obj) => process.stdout.write(RESULT_PREFIX + JSON.stringify(obj) + '\n');

function connection(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
}

const bullVersion = require('bullmq/package.json').version;
const ioredisVersion = require('ioredis/package.json').version;
const EXTRA = { lib: 'bullmq (Node)', version: bullVersion, ioredis: ioredisVersion, node: process.version };

function makeQueue(args) {
  return new Queue(QUEUE_NAME, { connection: connection(args.url), defaultJobOptions: JOB_OPTS });
}

async function startWorker(args, processor, onCompleted) {
  const worker = new Worker(QUEUE_NAME, processor, {
    connection: connection(args.url),
    concurrency: args.parallel,
  });
  if (onCompleted) worker.on('completed', onCompleted);
  worker.on('error', (e) => console.error('worker error', e));
  await worker.waitUntilReady();
  return async () => worker.close();
}

async function produceConcurrently(produceOne, n, concurrency) {
  const t0 = now();
  const tasks = [];
  for (let k = 0; k < Math.min(concurrency, n); k++) {
    tasks.push((async () => {
      for (let i = k; i < n; i += concurrency) await produceOne(i);
    })());
  }
  await Promise.all(tasks);
  return now() - t0;
}

async function produceInBatches(produceBatch, n, batch) {
  const t0 = now();
  for (let start = 0; start < n; start += batch) {
    const ids = [];
    for (let i = start; i < Math.min(n, start + batch); i++) ids.push(i);
    await produceBatch(ids);
  }
  return now() - t0;
}

function throughput(args, elapsed, extra) {
  return { workload: args.workload, n: args.n, elapsed_s: elapsed, value: args.n / elapsed, unit: 'msg/s', ...extra };
}

function waitForCount(counter, target, timeoutS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${counter.count}/${target} in ${timeoutS}s`)), timeoutS * 1000);
    counter.onTarget = () => { clearTimeout(timer); resolve(now()); };
    if (counter.count >= target) counter.onTarget();
  });
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  const k = Math.max(0, Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1));
  return sorted[k];
}

// Open-loop producer: message i is due at t0 + i/rate (absolute schedule, no drift).
async function offerAtRate(produceOne, rate, seconds, maxInFlight = 1000) {
  const total = Math.floor(rate * seconds);
  let inFlight = 0;
  let waiter = null;
  let errors = 0;
  let firstError = null;
  let maxLag = 0;
  const pending = new Set();
  const t0 = now();
  let i = 0;
  while (i < total) {
    const due = Math.min(total, Math.floor((now() - t0) * rate) + 1);
    while (i < due) {
      while (inFlight >= maxInFlight) await new Promise((r) => (waiter = r));
      maxLag = Math.max(maxLag, now() - t0 - i / rate);
      const msg = message(i);
      msg.ts = wallclock();
      inFlight++;
      const p = produceOne(msg)
        .catch((e) => { errors++; firstError = firstError || e; })
        .finally(() => {
          inFlight--; pending.delete(p);
          if (waiter) { const w = waiter; waiter = null; w(); }
        });
      pending.add(p);
      i++;
    }
    await sleep(i / rate - (now() - t0));
  }
  await Promise.race([Promise.all(pending), sleep(30)]);
  const elapsed = now() - t0;
  if (errors) throw new Error(`${errors} produce errors, first: ${firstError}`);
  return { sent: total, achieved_rate: total / elapsed, max_lag_ms: maxLag * 1000 };
}

async function runLatency(args) {
  const warmupCount = Math.floor(args.rate * args.warmup);
  const latencies = [];
  let received = 0;
  let firstAt = 0;
  let lastAt = 0;
  const stop = await startWorker(args, async (job) => {
    const t = wallclock();
    if (!received) firstAt = t;
    lastAt = t;
    received++;
    if (job.data.userId >= warmupCount) latencies.push((t - job.data.ts) * 1000);
  });
  let producer;
  try {
    await sleep(0.5);
    const child = spawn(process.execPath, [__filename, ...process.argv.slice(2), '--role', 'producer'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), (args.warmup + args.duration + args.timeout) * 1000);
    await new Promise((r) => child.on('close', r));
    clearTimeout(killer);
    const line = out.split('\n').reverse().find((l) => l.startsWith(RESULT_PREFIX));
    if (!line) throw new Error(`producer gave no result: ${out.slice(-500)}`);
    producer = JSON.parse(line.slice(RESULT_PREFIX.length));
    const deadline = now() + 30;
    while (received < producer.sent && now() < deadline) await sleep(0.01);
  } finally {
    await stop();
  }
  latencies.sort((a, b) => a - b);
  return {
    workload: 'latency',
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    mean_ms: latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : null,
    measured: latencies.length,
    received,
    sent: producer.sent,
    offered_rate: producer.achieved_rate,
    consumed_rate: (received - 1) / Math.max(1e-9, lastAt - firstAt),
    producer_max_lag_ms: producer.max_lag_ms,
    unit: 'ms',
    parallel: args.parallel,
    ...EXTRA,
  };
}

async function main(args) {
  if (args.role === 'producer') {
    const queue = makeQueue(args);
    await queue.waitUntilReady();
    try {
      return await offerAtRate((msg) => queue.add('noop', msg), args.rate, args.warmup + args.duration);
    } finally {
      await queue.close();
    }
  }
  if (args.workload === 'latency') return runLatency(args);
  const queue = makeQueue(args);
  await queue.waitUntilReady();
  const produceOne = (i) => queue.add('noop', message(i));
  const produceBatch = (ids) => queue.addBulk(ids.map((i) => ({ name: 'noop', data: message(i) })));
  try {
    if (args.workload === 'produce') {
      return throughput(args, await produceConcurrently(produceOne, args.n, args.concurrency), EXTRA);
    }
    if (args.workload === 'produce_batch') {
      return throughput(args, await produceInBatches(produceBatch, args.n, args.batch), { batch: args.batch, ...EXTRA });
    }
    if (args.workload === 'consume') {
      await produceInBatches(produceBatch, args.n, args.batch);
      const counter = { count: 0, onTarget: null };
      let seen = 0;
      const t0 = now();
      const done = waitForCount(counter, args.n, args.timeout);
      const stop = await startWorker(
        args,
        async (job) => { if (job.data && job.data.userId !== undefined) seen++; },
        () => { counter.count++; if (counter.count === args.n && counter.onTarget) counter.onTarget(); },
      );
      let t1;
      try {
        t1 = await done;
      } finally {
        await stop();
      }
      if (seen !== args.n) throw new Error(`handler saw data in ${seen}/${args.n} jobs`);
      return throughput(args, t1 - t0, { parallel: args.parallel, ...EXTRA });
    }
    throw new Error(`unknown workload ${args.workload}`);
  } finally {
    await queue.close();
  }
}

const args = parseArgs(process.argv.slice(2));
main(args).then(
  (result) => { emit(result); process.exit(0); },
  (err) => { console.error(err); process.exit(1); },
);
