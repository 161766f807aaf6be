// BullMQ side of the queue benchmark: enqueue N no-op jobs with addBulk, then process N
// no-op jobs with one Worker at each concurrency. removeOnComplete as in production use.
// Prints one JSON line: {"enqueue": jobs/s, "c10": jobs/s, "c50": jobs/s}.
// Usage: node queue_bench.js [host] [port] [jobs] [concurrency,...]
const { Queue, Worker } = require('bullmq');

const host = process.argv[2] || '127.0.0.1';
const port = parseInt(process.argv[3] || '6379', 10);
const N = parseInt(process.argv[4] || '100000', 10);
const concurrencies = (process.argv[5] || '10,50').split(',').map(Number);
const connection = { host, port, maxRetriesPerRequest: null };

function bulk(round) {
  const jobs = new Array(N);
  for (let i = 0; i < N; i++) {
    jobs[i] = { name: 'noop', data: { i: round * N + i }, opts: { removeOnComplete: true, removeOnFail: true } };
  }
  return jobs;
}

async function main() {
  const name = `fqbench-${process.pid}-${Date.now()}`;
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const out = {};

  let t = process.hrtime.bigint();
  await queue.addBulk(bulk(0));
  out.enqueue = Math.round(N / (Number(process.hrtime.bigint() - t) / 1e9));

  for (let r = 0; r < concurrencies.length; r++) {
    const c = concurrencies[r];
    if (r > 0) await queue.addBulk(bulk(r));
    let done = 0;
    let finish;
    const finished = new Promise((res) => { finish = res; });
    t = process.hrtime.bigint();
    const worker = new Worker(name, async () => {}, { connection, concurrency: c });
    worker.on('completed', () => { if (++done === N) finish(); });
    worker.on('failed', (job, err) => { console.error('failed', err); });
    await finished;
    const secs = Number(process.hrtime.bigint() - t) / 1e9;
    out[`c${c}`] = Math.round(N / secs);
    await worker.close();
  }
  await queue.obliterate({ force: true });
  await queue.close();
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
