// Package leaftest checks regional NATS leaf nodes with real processes:
// one meridian-control node, three `meridian-control leaf` processes
// (eu-west, us-east, ap-south) each behind a TCP relay that the test can
// cut (shared/testkit/relay), and real meridian-edge processes that
// joined the fleet with their own nkeys and connect only to their
// region's leaf. A change reaches every edge through its leaf; a region
// whose leaf is cut from the control plane hands its last table to a new
// edge with an empty cache while the other regions get new changes; when
// the cut heals the region catches up. `make test-leaves` runs it.
//
// It holds tests only and must never be imported.
package leaftest
