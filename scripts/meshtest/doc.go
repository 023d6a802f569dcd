// Package meshtest runs the whole mesh in one test process: a three-node
// Raft control plane with its NATS distribution, three edges in three
// regions joined by real gossip and QUIC links, mock providers in each
// region and one real Ollama, with the fleet written through the control
// API only. Its scenarios check what the router promises end to end:
// placements drive where a model runs, clients land near them, residency
// is never broken, breakers open and probe, and a dying peer costs no
// request that could have been retried.
//
// It holds tests only and must never be imported.
package meshtest
