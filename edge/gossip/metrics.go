package gossip

import "github.com/prometheus/client_golang/prometheus"

var membersDesc = prometheus.NewDesc("meridian_gossip_members",
	"Members this node's gossip knows, by state: alive, suspect (alive, but another edge's link declared it dead), dead or left; this node included.",
	[]string{"state"}, nil)

// membersCollector counts the members by state at scrape time. It reads
// Members, which never runs inside a memberlist callback.
type membersCollector struct{ n *Node }

// Collector returns the collector of meridian_gossip_members for n.
func Collector(n *Node) prometheus.Collector { return membersCollector{n} }

func (c membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (c membersCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{StateAlive: 0, stateSuspect: 0, StateDead: 0, StateLeft: 0}
	for _, m := range c.n.Members() {
		s := m.State
		if s == StateAlive && m.Suspect {
			s = stateSuspect
		}
		if _, ok := counts[s]; ok {
			counts[s]++
		}
	}
	for s, v := range counts {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(v), s)
	}
}

// stateSuspect is the members metric's state for an alive member under
// suspicion (Member.Suspect).
const stateSuspect = "suspect"
