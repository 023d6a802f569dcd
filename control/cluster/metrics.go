package cluster

import (
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// commitBuckets span a loopback commit (under a millisecond) to a slow
// disk across regions (seconds).
var commitBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

func newCommitHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meridian_control_raft_commit_seconds",
		Help:    "Time from proposing a command on this node (the leader) to its commit and apply here.",
		Buckets: commitBuckets,
	})
}

// Collectors returns the node's own Raft collectors: commit latency and
// snapshot age. The API registers them with its own.
func (n *Node) Collectors() []prometheus.Collector {
	return []prometheus.Collector{n.commitSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_control_raft_snapshot_age_seconds",
			Help: "Age of this node's newest Raft snapshot; with none yet, the time since the node opened."},
			func() float64 { return time.Since(n.lastSnapshot()).Seconds() }),
	}
}

// lastSnapshot is when this node's newest snapshot was taken, from the
// snapshot store's IDs ("term-index-unixmillis"), or when the node
// opened if it has none.
func (n *Node) lastSnapshot() time.Time {
	at := n.opened
	metas, err := n.snaps.List()
	if err != nil {
		return at
	}
	for _, m := range metas {
		if t, ok := snapshotTime(m); ok && t.After(at) {
			at = t
		}
	}
	return at
}

func snapshotTime(m *raft.SnapshotMeta) (time.Time, bool) {
	i := strings.LastIndexByte(m.ID, '-')
	if i < 0 {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(m.ID[i+1:], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}
