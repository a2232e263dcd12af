#!/usr/bin/env node
// moleculer, the framework a Node.js user would pick instead, on the same
// RabbitMQ: its AMQP transporter (amqplib) in broker-balanced mode
// (disableBalancer: true, so RabbitMQ spreads the events over the group's
// queue), prefetch 100, manual acks after the handler. Two service brokers in
// this process, a sender and a receiver with one event handler; events of
// ~100 bytes ({id, text}), moleculer's own JSON packets, not persistent.
//
//   node bench.js N            throughput: N events as fast as they go
//   node bench.js N RATE       latency: N events at RATE/s, send to handler
//
// Prints the figures as bench_rabbitmq does, with an "@ {json}" line for
// scripts/bench. CPU is the process's (all threads) from the first send to
// the last receive, so that node's start-up is not counted; peak RSS is the
// whole process's.
// URL: $EW_BENCH_MOLECULER_URL, else amqp://guest:guest@127.0.0.1:5672.
"use strict";

const { ServiceBroker } = require("moleculer");

function usage(code) {
	(code ? process.stderr : process.stdout).write(
		"usage: node bench.js EVENTS [RATE]\n" +
			"  EVENTS  events to send and receive (1..100000000)\n" +
			"  RATE    a latency run at RATE events/s instead of a throughput run\n"
	);
	process.exit(code);
}

function count(s, max) {
	if (!/^[0-9]+$/.test(s || "")) return 0;
	const v = Number(s);
	return v >= 1 && v <= max ? v : 0;
}

async function main() {
	const args = process.argv.slice(2);
	if (args[0] === "-h" || args[0] === "--help") usage(0);
	const n = count(args[0], 100000000);
	const rate = args.length > 1 ? count(args[1], 10000000) : 0;
	if (!n || (args.length > 1 && !rate) || args.length > 2) usage(2);

	const url = process.env.EW_BENCH_MOLECULER_URL || "amqp://guest:guest@127.0.0.1:5672";
	const common = {
		namespace: "ewbench" + process.pid, // names of its own on the shared broker
		transporter: {
			type: "AMQP",
			// Queues expire 10 s after their last consumer left: nothing is left behind.
			options: { url, prefetch: 100, autoDeleteQueues: 10000 }
		},
		disableBalancer: true,
		logger: false
	};
	const recv = new ServiceBroker({ ...common, nodeID: "recv-" + process.pid });
	const send = new ServiceBroker({ ...common, nodeID: "send-" + process.pid });

	let got = 0;
	let warm = 0;
	let tLast = 0n;
	const lat = rate ? new Float64Array(n) : null;
	let done;
	const all = new Promise(resolve => (done = resolve));
	recv.createService({
		name: "counter",
		events: {
			"bench.event"(ctx) {
				if (ctx.params.warm) {
					warm++;
					return;
				}
				if (lat) lat[got] = Number(process.hrtime.bigint() - BigInt(ctx.params.t)) / 1000;
				if (++got === n) {
					tLast = process.hrtime.bigint();
					done();
				}
			}
		}
	});
	await recv.start();
	await send.start();
	await send.waitForServices("counter", 30000);
	// Discovery re-creates the receiver's consumer once the sender's INFO
	// arrives, and deliveries in flight to the cancelled consumer stay
	// unacknowledged: warm up until events pass steadily, then measure.
	const sleep = ms => new Promise(r => setTimeout(r, ms));
	for (let tries = 0; warm < 10; tries++) {
		if (tries === 300) throw new Error("warm-up events do not arrive");
		send.emit("bench.event", { warm: true });
		await sleep(100);
	}
	await sleep(500);

	const text = "x".repeat(86);
	const cpu0 = process.cpuUsage();
	const t0 = process.hrtime.bigint();
	if (rate) {
		for (let i = 0; i < n; i++) {
			const due = t0 + BigInt(Math.round((i * 1e9) / rate));
			const now = process.hrtime.bigint();
			if (due > now) await new Promise(r => setTimeout(r, Number((due - now) / 1000000n)));
			send.emit("bench.event", { t: process.hrtime.bigint().toString(), text });
		}
	} else {
		let batch = [];
		for (let i = 0; i < n; i++) {
			batch.push(send.emit("bench.event", { id: i, text }));
			if (batch.length === 1000) {
				await Promise.all(batch);
				batch = [];
			}
		}
		await Promise.all(batch);
	}
	const timeout = setTimeout(() => {
		process.stderr.write(`moleculer bench: only ${got} of ${n} events arrived\n`);
		process.exit(1);
	}, 120000);
	await all;
	clearTimeout(timeout);
	const cpu = process.cpuUsage(cpu0);
	await send.stop();
	await recv.stop();

	const ru = process.resourceUsage();
	const cpuUs = (cpu.user + cpu.system) / n;
	const base = {
		bench: "rabbitmq",
		case: "transient",
		impl: "moleculer",
		size: 100,
		concurrency: 1,
		events: n
	};
	if (rate) {
		const s = Array.from(lat).sort((a, b) => a - b);
		const pct = p => s[Math.min(n - 1, Math.floor(p * n))];
		console.log(
			`moleculer latency, ${n} events at ${rate}/s, p50 / p99 / p99.9: ` +
				`${pct(0.5).toFixed(0)} / ${pct(0.99).toFixed(0)} / ${pct(0.999).toFixed(0)} us`
		);
		console.log(
			"@ " +
				JSON.stringify({
					...base,
					kind: "latency",
					send_rate: rate,
					p50_us: pct(0.5),
					p99_us: pct(0.99),
					p999_us: pct(0.999),
					rss_kb: ru.maxRSS
				})
		);
	} else {
		const r = (n * 1e9) / Number(tLast - t0);
		console.log(
			`moleculer ${n} events: ${r.toFixed(0)} events/s, ${cpuUs.toFixed(1)} us CPU/event, ` +
				`peak RSS ${ru.maxRSS} KiB`
		);
		console.log(
			"@ " +
				JSON.stringify({
					...base,
					kind: "rate",
					round: 1,
					rate: r,
					cpu_us_per_event: cpuUs,
					rss_kb: ru.maxRSS
				})
		);
	}
}

main().catch(err => {
	process.stderr.write(`moleculer bench: ${err && err.stack ? err.stack : err}\n`);
	process.exit(1);
});
