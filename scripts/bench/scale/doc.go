// Package scale is the fleet-scale harness (`make bench-scale`): a real
// 3-node control plane with its clustered NATS servers in the test
// process, and per fleet size up to 1,000 edge stand-ins in a child
// process (this test binary again), each with the real table client
// (edge/tablesync, patching deltas), the real gateway and router, and a
// real gossip node (edge/gossip, memberlist on the in-memory network of
// shared/testkit/gossipnet). Local engines and links are absent: the
// router sees every link up and each peer at a fixed latency (-latency).
// It measures, per fleet size, table propagation, a placement change
// reaching every router, gossip cost (packets measured in a window,
// push-pull from measured exchanges), failure detection, the edge
// process's and the control plane's CPU and memory while every edge
// reports, and router decision time with the full membership; with
// -pools, one global gossip pool against a pool per region plus a WAN
// pool of designated edges. From -scale-from edges the probe and
// push-pull timers are multiplied by -scale-by and gossip packets may
// carry 8 KB (two cores cannot run hundreds of members on the shipped
// timers, nor a thousand-member mass join in 1,400-byte packets); the
// report marks those rows. Joins come in drained waves of at most 100,
// fewer as the pool grows (waveSize); the fleet's gossip converges before
// the first table is timed. SCALE_CPUPROFILE=<file> writes an edge
// process's CPU profile, SCALE_MEMPROFILE=<file> its heap after the last
// join wave, SCALE_PPROF=127.0.0.1:<port> serves net/http/pprof from it.
//
// It runs as a test, skipped unless MERIDIAN_BENCH_SCALE=1, because the
// control cluster comes from control/controltest:
//
//	MERIDIAN_BENCH_SCALE=1 go test -run TestScale -timeout 45m ./scripts/bench/scale -args -sizes 30,100,300,1000 -pools 30,300,1000 -bound 40m -readme ../../../README.md
//
// Every phase is bounded in time; a size whose phase times out is
// reported as such and the larger sizes are skipped. The last line is
//
//	scale: edges=<n> prop_p99_ms=<x> gossip_bytes_ratio_1000_vs_30=<x> control_cpu_pct=<x>
package scale
