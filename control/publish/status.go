package publish

import (
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// edgeRecord is an edge's last report and when it arrived.
type edgeRecord struct {
	report *tablev1.AppliedReport
	at     time.Time
}

// Status is a control node's view of table distribution, for
// `meridianctl status`.
type Status struct {
	// Node is this control node's Raft ID.
	Node string `json:"node"`
	// Leader is whether this node publishes.
	Leader bool `json:"leader"`
	// StateRevision is the Raft index of the newest state compiled.
	StateRevision uint64 `json:"state_revision"`
	// TableRevision is the last valid table's revision.
	TableRevision uint64 `json:"table_revision"`
	// PublishedRevision is the last revision this node published, while
	// it leads.
	PublishedRevision uint64 `json:"published_revision,omitempty"`
	// Rejected says why the newest state was not published, at
	// RejectedRevision; empty when it was.
	Rejected         string `json:"rejected,omitempty"`
	RejectedRevision uint64 `json:"rejected_revision,omitempty"`
	// Edges are the edges that reported, sorted by node.
	Edges []EdgeStatus `json:"edges"`
	// Placements are the last valid table's placements, sorted by ID,
	// with the nodes each resolves to and those reporting it ready.
	Placements []PlacementStatus `json:"placements"`
}

// EdgeStatus is one edge's last report, as this control node heard it.
type EdgeStatus struct {
	Node     string `json:"node"`
	Region   string `json:"region,omitempty"`
	Revision uint64 `json:"revision"`
	// Epoch is the epoch of the edge's table (raised by every restore of
	// the control plane from backup).
	Epoch uint64 `json:"epoch,omitempty"`
	// Lag is how many revisions the edge is behind the last valid table,
	// within its epoch (an edge in an older epoch lags by its whole
	// revision gap, at least 1).
	Lag uint64 `json:"lag"`
	// Ahead means the edge holds a newer table than this control node
	// compiled: a higher revision in the same epoch, or a higher epoch.
	// After a restore from an older backup, such an edge ignores the
	// control plane until the restore raises the epoch; it is never
	// reported current.
	Ahead bool `json:"ahead,omitempty"`
	// Unverified is why the edge last refused a message it could not
	// verify (a signature or cluster ID), empty when none.
	Unverified string `json:"unverified,omitempty"`
	// Stale is the edge's own verdict: it serves from disk, or hears no
	// heartbeat, or stays behind one.
	Stale bool `json:"stale"`
	// Silent means no report arrived within a few of the edge's report
	// intervals: it is down, cut off, or no longer exists.
	Silent bool `json:"silent"`
	// LastReport is when the last report arrived.
	LastReport       time.Time `json:"last_report"`
	Source           string    `json:"source,omitempty"`
	RejectedRevision uint64    `json:"rejected_revision,omitempty"`
	RejectedReason   string    `json:"rejected_reason,omitempty"`
	Unusable         []string  `json:"unusable,omitempty"`
	// ReadyModels are the models the edge's local engine serves, as it
	// last reported them, sorted.
	ReadyModels []string `json:"ready_models,omitempty"`
}

// maxNodeID bounds a reporting edge's ID, bytes.
const maxNodeID = 128

func (p *Publisher) recordApplied(m *nats.Msg) {
	r := &tablev1.AppliedReport{}
	if len(m.Data) > maxRequest || proto.Unmarshal(m.Data, r) != nil || r.GetNode() == "" || len(r.GetNode()) > maxNodeID {
		p.m.reports.WithLabelValues("bad").Inc()
		return
	}
	if strings.HasPrefix(m.Subject, tablewire.SubjectApplied+".") && m.Subject != tablewire.ReportSubject(r.GetNode()) {
		// An edge's identity may publish only its own subject, so a
		// report there naming another node is forged.
		p.m.reports.WithLabelValues("bad").Inc()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, known := p.edges[r.GetNode()]; !known && len(p.edges) >= p.cfg.MaxEdges {
		p.m.reports.WithLabelValues("over_limit").Inc()
		return
	}
	// The edge sends its ready models sorted; an older or foreign sender
	// might not, and placements look them up.
	if !slices.IsSorted(r.GetReadyModels()) {
		slices.Sort(r.ReadyModels)
	}
	p.edges[r.GetNode()] = &edgeRecord{report: r, at: p.cfg.Now()}
	p.m.reports.WithLabelValues("ok").Inc()
}

// Status returns this node's view of distribution.
func (p *Publisher) Status() Status {
	rev := uint64(0)
	g := p.good.Load()
	if g != nil {
		rev = g.table.GetRevision()
	}
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{
		Node: p.cfg.NodeID, Leader: p.leading, StateRevision: p.stateRev, TableRevision: rev,
		PublishedRevision: p.publishedRev, Rejected: p.rejected, RejectedRevision: p.rejectedRev,
		Edges: make([]EdgeStatus, 0, len(p.edges)),
	}
	for node, e := range p.edges {
		if now.Sub(e.at) > p.cfg.ForgetAfter {
			delete(p.edges, node)
			continue
		}
		r := e.report
		es := EdgeStatus{
			Node: r.GetNode(), Region: r.GetRegion(), Revision: r.GetRevision(), Stale: r.GetStale(),
			LastReport: e.at, Source: r.GetSource(), RejectedRevision: r.GetRejectedRevision(),
			RejectedReason: r.GetRejectedReason(), Unusable: r.GetUnusable(), ReadyModels: r.GetReadyModels(),
		}
		es.Epoch, es.Unverified = r.GetEpoch(), r.GetUnverified()
		switch epoch := g.tableEpoch(); {
		case r.GetEpoch() > epoch, r.GetEpoch() == epoch && r.GetRevision() > rev:
			es.Ahead = true
		case r.GetEpoch() < epoch:
			es.Lag = max(1, rev-min(rev, r.GetRevision()))
		case rev > r.GetRevision():
			es.Lag = rev - r.GetRevision()
		}
		interval := time.Duration(r.GetIntervalMs()) * time.Millisecond
		if interval <= 0 {
			interval = 10 * time.Second
		}
		es.Silent = now.Sub(e.at) > time.Duration(p.cfg.SilentAfter)*interval
		st.Edges = append(st.Edges, es)
	}
	slices.SortFunc(st.Edges, func(a, b EdgeStatus) int { return strings.Compare(a.Node, b.Node) })
	st.Placements = []PlacementStatus{}
	if g != nil {
		st.Placements = readyOn(g.placements, st.Edges)
	}
	return st
}

// edgesCollector exports the edges' states at scrape time:
// meridian_control_edges{state="current|behind|ahead|stale|silent"}.
type edgesCollector struct {
	p    *Publisher
	desc *prometheus.Desc
}

func (c edgesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c edgesCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"current": 0, "behind": 0, "ahead": 0, "stale": 0, "silent": 0}
	for _, e := range c.p.Status().Edges {
		switch {
		case e.Silent:
			counts["silent"]++
		case e.Stale:
			counts["stale"]++
		case e.Ahead:
			counts["ahead"]++
		case e.Lag > 0:
			counts["behind"]++
		default:
			counts["current"]++
		}
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// tableEpoch is the compiled table's epoch; 0 before the first.
func (c *compiled) tableEpoch() uint64 {
	if c == nil {
		return 0
	}
	return c.table.GetEpoch()
}
