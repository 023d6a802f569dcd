// Package scale is the fleet-scale harness (`make bench-scale`): a real
// 3-node control plane with its clustered NATS servers, and up to 1,000
// edge stand-ins in this one process, each with the real table client
// (edge/tablesync, patching deltas), the real gateway and router, and a
// real gossip node (edge/gossip, memberlist on loopback UDP/TCP). Local
// engines and links are absent: the router sees every link up and each
// peer at a fixed latency (-latency). It measures, per fleet size, table
// propagation, a placement change reaching every router, gossip cost,
// failure detection, process CPU and memory while every edge reports, and
// router decision time with the full membership.
//
// It runs as a test, skipped unless MERIDIAN_BENCH_SCALE=1, because the
// control cluster comes from control/controltest:
//
//	MERIDIAN_BENCH_SCALE=1 go test -run TestScale -timeout 15m ./scripts/bench/scale -args -sizes 30,100,300,1000 -readme ../../../README.md
//
// Every phase is bounded in time; a size whose phase times out is
// reported as such and the larger sizes are skipped. The last line is
//
//	scale: edges=<n> prop_p99_ms=<x> gossip_bytes_ratio_1000_vs_30=<x> control_cpu_pct=<x>
package scale
