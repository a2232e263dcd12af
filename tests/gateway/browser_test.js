// The gateway's page in headless Chromium (Debian's /usr/bin/chromium),
// driven by playwright-core. Events sent with `eventwire send` appear in the
// DOM; the gateway ends the page's stream (--max-stream-s); the page's
// reconnect is held while more events are POSTed, so they are sent while it
// is disconnected; released, the EventSource resumes with Last-Event-ID and
// the page shows every event exactly once, in order. Synchronises on the
// page's state and the gateway's answers, never on sleeps. Leaves a
// screenshot in OUTDIR.
//
//   node browser_test.js EVENTWIRE URL MODULES_DIR OUTDIR
'use strict';
const { spawn, execFile } = require('child_process');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const [EW, URL, MODULES, OUTDIR] = process.argv.slice(2);
const { chromium } = require(path.join(MODULES, 'node_modules', 'playwright-core'));
const EVENT = `gwb${process.pid}x${Date.now() % 100000000}.page`;
const T = 60000; // bound on every wait

function fail(msg) {
  console.log('FAIL: ' + msg);
  process.exit(1);
}
function ok(msg) {
  console.log('ok: ' + msg);
}

function startGateway() {
  return new Promise((resolve) => {
    const p = spawn(EW, ['serve', URL, '--http', '127.0.0.1:0', '--retry-ms', '500',
                         '--max-stream-s', '4'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const lines = [];
    let buf = '';
    const timer = setTimeout(() => fail(`serve did not listen: ${lines.join(' | ')}`), T);
    p.stderr.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        const m = line.match(/listening on http:\/\/127\.0\.0\.1:(\d+)\//);
        if (m) {
          clearTimeout(timer);
          resolve({ p, port: Number(m[1]), lines });
        }
      }
    });
  });
}

function request(port, method, pth, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: pth,
                               headers: body ? { 'Content-Type': 'application/json' } : {} },
                             (res) => {
                               let data = '';
                               res.on('data', (d) => { data += d; });
                               res.on('end', () => resolve({ status: res.statusCode, data }));
                             });
    req.on('error', reject);
    req.end(body);
  });
}

function cliSend(obj) {
  return new Promise((resolve) => {
    execFile(EW, ['send', URL, EVENT, JSON.stringify(obj)], { timeout: T }, (err, out, errOut) => {
      if (err) fail(`eventwire send: ${err.message} ${errOut}`);
      resolve(out.trim());
    });
  });
}

async function metric(port, name) {
  const r = await request(port, 'GET', '/metrics');
  const m = r.data.match(new RegExp('^' + name + ' (\\S+)$', 'm'));
  if (r.status !== 200 || !m) fail(`/metrics: ${r.status}, no ${name}`);
  return Number(m[1]);
}

async function shownIds(page) {
  return page.$$eval('#events li.event', (lis) => lis.map((li) => li.dataset.id));
}

async function main() {
  fs.mkdirSync(OUTDIR, { recursive: true });
  const gw = await startGateway();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ew-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: T,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(T);
    await page.goto(`http://127.0.0.1:${gw.port}/?event=${encodeURIComponent(EVENT)}`);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'open');
    ok('the page is loaded and its EventSource is open');

    // 1. Events sent with the CLI from other processes appear in the DOM.
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await cliSend({ phase: 'cli', n: i }));
    await page.waitForFunction((n) => document.querySelectorAll('#events li.event').length >= n,
                               ids.length);
    let shown = await shownIds(page);
    if (JSON.stringify(shown) !== JSON.stringify(ids))
      fail(`DOM shows ${JSON.stringify(shown)}, sent ${JSON.stringify(ids)}`);
    ok(`3 events sent with eventwire send are in the DOM: ${ids.join(', ')}`);

    // 2. The gateway ends the stream (--max-stream-s 4); the page's next
    // connection is held here, so what is sent now is sent while the page
    // has no stream.
    let held;
    const reconnect = new Promise((resolve) => {
      page.route('**/events/**', (route) => { held = route; resolve(); });
    });
    await reconnect;
    // (Chromium adds Last-Event-ID below the layer that holds the request:
    // the gateway's resume counter below shows it came.)
    ok('the gateway ended the stream; the page reconnects (held here)');
    // The ended stream is released by the gateway right after its last
    // write: wait for that before sending.
    for (const end = Date.now() + T; await metric(gw.port, 'eventwire_gateway_streams') !== 0;) {
      if (Date.now() > end) fail('the gateway still counts a stream while the reconnect is held');
      await new Promise((r) => setTimeout(r, 50)); // polls a condition
    }
    const missed = [];
    for (let i = 0; i < 3; i++) {
      const r = await request(gw.port, 'POST', '/events/' + EVENT,
                              JSON.stringify({ phase: 'disconnected', n: i }));
      if (r.status !== 202) fail(`POST: ${r.status} ${r.data}`);
      missed.push(JSON.parse(r.data).id);
    }
    missed.push(await cliSend({ phase: 'disconnected', n: 3 }));
    if (await metric(gw.port, 'eventwire_gateway_streams') !== 0)
      fail('a stream was open while the events were sent');
    ok(`4 events sent while the page had no stream: ${missed.join(', ')}`);
    const resumesBefore = await metric(gw.port, 'eventwire_gateway_resumes_total');
    await held.continue();
    await page.unroute('**/events/**');

    // 3. The page resumes: each event exactly once, in order, no gap.
    const all = ids.concat(missed);
    await page.waitForFunction((n) => document.querySelectorAll('#events li.event').length >= n,
                               all.length);
    const live = await cliSend({ phase: 'live' });
    all.push(live);
    await page.waitForFunction((id) => !!document.querySelector(`#events li[data-id="${id}"]`),
                               live);
    shown = await shownIds(page);
    if (JSON.stringify(shown) !== JSON.stringify(all))
      fail(`DOM shows ${JSON.stringify(shown)}, expected each once: ${JSON.stringify(all)}`);
    const gaps = await page.$$eval('#events li.gap', (l) => l.length);
    if (gaps !== 0) fail(`the page shows ${gaps} gap notices`);
    const reconnects = Number(await page.textContent('#reconnects'));
    if (reconnects < 1) fail(`the page counted ${reconnects} reconnects`);
    // The released reconnect is the one resume: it carried the Last-Event-ID
    // of the page's last event, found in the gateway's buffer.
    const resumes = await metric(gw.port, 'eventwire_gateway_resumes_total');
    if (resumes !== resumesBefore + 1 || await metric(gw.port, 'eventwire_gateway_gaps_total') !== 0)
      fail(`resumes from Last-Event-ID went ${resumesBefore} -> ${resumes}, or a gap was counted`);
    ok(`after the reconnect the page shows all ${all.length} events once each, in order`);
    const shot = path.join(OUTDIR, 'gateway_browser.png');
    await page.screenshot({ path: shot, fullPage: true });
    ok(`screenshot: ${shot}`);
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  gw.p.kill('SIGTERM');
  const code = await new Promise((resolve) => {
    // 'close': the process ended and its stderr is read to the end.
    gw.p.on('close', (c) => resolve(c));
    setTimeout(() => fail('serve did not exit within 60 s of SIGTERM'), T).unref();
  });
  if (code !== 0) fail(`serve exited ${code}: ${gw.lines.join(' | ')}`);
  const odd = gw.lines.filter((l) => l && !/listening on|stopping|stopped/.test(l));
  if (odd.length) fail(`serve wrote on stderr: ${odd.join(' | ')}`);
  ok('SIGTERM: serve exited 0');
  console.log('PASS');
}

main().catch((e) => fail(e.stack || String(e)));
