package usage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/control/usage"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// fleet writes what the records refer to: a region, a model, a tenant
// with a hard budget and its key.
func fleet(t *testing.T, c *controltest.Cluster, budgetUSD float64) {
	t.Helper()
	ops := []*controlv1.Op{
		fsm.PutOp(&controlv1.Region{Id: "eu", Name: "Europe", Latitude: 50, Longitude: 8}),
		fsm.PutOp(&controlv1.Model{Id: "m1"}),
		fsm.PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: budgetUSD, HardLimit: true, BudgetPeriod: "day"}),
		fsm.PutOp(&controlv1.Tenant{Id: "beta"}),
		fsm.PutOp(&controlv1.Key{Id: "k1", Hash: "sha256:" + strings.Repeat("a", 64), Tenant: "acme"}),
	}
	for {
		res, err := c.Leader().Node.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: "fleet", Ops: ops})
		if err == nil {
			if res.GetCode() != "" {
				t.Fatalf("fleet: %v", res)
			}
			return
		}
	}
}

// joinEdge joins node to the fleet and connects to url with its own
// nkey, as an edge does: only EdgePermissions.
func joinEdge(t *testing.T, c *controltest.Cluster, node, url string) *nats.Conn {
	t.Helper()
	ctx := context.Background()
	do := func(method, path, token string, body any) []byte {
		b, _ := json.Marshal(body)
		st, out, _, err := c.Leader().Do(ctx, method, path, token, strings.NewReader(string(b)))
		if err != nil || st/100 != 2 {
			t.Fatalf("%s %s: %d %s %v", method, path, st, out, err)
		}
		return out
	}
	var tr api.TokenResponse
	json.Unmarshal(do("POST", "/v1/control/identity/tokens", controltest.AdminToken, api.TokenRequest{Node: node, Region: "eu"}), &tr)
	_, csr, _ := pki.NewKeyCSR(node)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	do("POST", "/v1/control/identity/join", "", api.NodeJoinRequest{Token: tr.Token, CSR: string(csr), NATSKey: pub})
	var nc *nats.Conn
	wait.For(t, 10*time.Second, "the edge's NATS connection", func() error {
		var err error
		nc, err = nats.Connect(url, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(tablewire.InboxPrefix(node)),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		return err
	})
	t.Cleanup(nc.Close)
	return nc
}

type sent struct {
	requests, in, out uint64
	nano              int64
}

func (s *sent) add(r *usagev1.Record) {
	s.requests++
	s.in += r.GetTokensIn()
	s.out += r.GetTokensOut()
	s.nano += r.GetCostNanoUsd()
}

func record(i int, node string, at time.Time) *usagev1.Record {
	in, out := uint64(10+i%97), uint64(1+i%31)
	tenant := "acme"
	if i%3 == 0 {
		tenant = "beta"
	}
	return &usagev1.Record{Schema: 1, RequestId: fmt.Sprintf("req-%06d", i), Tenant: tenant, Key: "k1", Model: "m1",
		Target: "local", TargetKind: "local", Node: node, Region: "eu", TokensIn: in, TokensOut: out,
		CostNanoUsd: usagewire.CostNanoUSD(in, out, price), Status: 200, UnixMs: at.UnixMilli()}
}

var price = table.Price{Input: 2.5, Output: 10}

func publish(t *testing.T, js jetstream.JetStream, node string, r *usagev1.Record, msgID string) {
	t.Helper()
	b, _ := proto.Marshal(r)
	msg := nats.NewMsg(usagewire.UsageSubject(node))
	msg.Data = b
	// A publish in flight while the stream's leader changes may time
	// out; an edge re-sends it from its spool with the same message ID.
	wait.For(t, 30*time.Second, "a JetStream ack for "+msgID, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
		return err
	})
}

func totals(s *fsm.State) sent {
	var got sent
	s.UsageTotals("", func(u *controlv1.UsageTotal) bool {
		got.requests += u.GetRequests()
		got.in += u.GetTokensIn()
		got.out += u.GetTokensOut()
		got.nano += u.GetCostNanoUsd()
		return true
	})
	return got
}

func waitTotals(t *testing.T, m *controltest.Member, want sent) {
	t.Helper()
	wait.For(t, 30*time.Second, "exact totals on "+m.Name, func() error {
		if got := totals(m.Node.FSM().State()); got != want {
			return fmt.Errorf("totals %+v, want %+v", got, want)
		}
		return nil
	})
}

// Records published with an edge's own nkey reach the replicated totals
// exactly: a re-sent record counts once (same message ID: JetStream
// drops it; a new message ID: the state machine does), also across a
// leader kill, and the totals survive a restart.
func TestUsageIsExactAcrossLeaderKill(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 3, controltest.Options{Distribution: true, ClusterNATS: true, Usage: true, KEK: kek, Timers: 2})
	fleet(t, c, 1000)
	leader := c.Leader()
	// The edge talks to a follower's server: records cross the NATS
	// cluster to the stream.
	via := c.Followers()[0]
	nc := joinEdge(t, c, "edge-1", via.NATSURL())
	js, _ := jetstream.New(nc)

	now := time.Now()
	var want sent
	const first = 300
	for i := range first {
		r := record(i, "edge-1", now)
		publish(t, js, "edge-1", r, r.GetRequestId())
		want.add(r)
	}
	// Re-sent inside JetStream's window, and again under another message
	// ID (as an edge's spool could after the window).
	for i := 0; i < first; i += 10 {
		r := record(i, "edge-1", now)
		publish(t, js, "edge-1", r, r.GetRequestId())
		publish(t, js, "edge-1", r, r.GetRequestId()+"-again")
	}
	waitTotals(t, leader, want)
	// JetStream dropped the re-sends under the same message ID; the state
	// machine dropped those under new ones.
	var st usage.Stats
	wait.For(t, 30*time.Second, "the re-sent records", func() error {
		// Leadership may have moved under load: sum every aggregator.
		st = usage.Stats{}
		for _, m := range c.Members {
			s := m.Usage().Stats()
			st.Batches, st.Applied, st.Duplicate = st.Batches+s.Batches, st.Applied+s.Applied, st.Duplicate+s.Duplicate
		}
		if st.Applied != first || st.Duplicate != first/10 {
			return fmt.Errorf("aggregator stats %+v: want %d applied, %d duplicates", st, first, first/10)
		}
		return nil
	})
	if got := totals(leader.Node.FSM().State()); got != want {
		t.Fatalf("after the re-sends: totals %+v, want %+v", got, want)
	}

	// Kill the leader, after a snapshot so that its restart below reads
	// the totals back from it; the next leader resumes the durable
	// consumer.
	if err := leader.Node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	leader.Kill()
	next := c.Leader()
	for i := first; i < first+100; i++ {
		r := record(i, "edge-1", now)
		publish(t, js, "edge-1", r, r.GetRequestId())
		want.add(r)
	}
	for i := 5; i < first; i += 50 { // old records once more
		r := record(i, "edge-1", now)
		publish(t, js, "edge-1", r, r.GetRequestId()+"-late")
	}
	waitTotals(t, next, want)

	// The killed node restarts from its log and snapshot.
	leader.Restart()
	waitTotals(t, leader, want)
	c.WaitConverged()

	// The API reads the same totals, grouped.
	var resp api.UsageResponse
	getJSON(t, next, "/v1/control/usage?group_by=tenant", &resp)
	rows := resp.Rows
	if len(rows) != 2 || rows[0].Tenant != "acme" || rows[1].Tenant != "beta" ||
		rows[0].Requests+rows[1].Requests != want.requests || rows[0].CostNanoUSD+rows[1].CostNanoUSD != want.nano {
		t.Fatalf("usage by tenant %+v, want %d requests, %d nano-USD", rows, want.requests, want.nano)
	}
	t.Logf("%d records (+%d re-sent) → %d requests, $%s; the first leader proposed %d batches", first+100, first/5+6,
		want.requests, usage.USD(want.nano), st.Batches)
}

func getJSON(t *testing.T, m *controltest.Member, path string, v any) {
	t.Helper()
	st, b, _, err := m.Do(context.Background(), "GET", path, controltest.ReadToken, nil)
	if err != nil || st != http.StatusOK {
		t.Fatalf("GET %s: %d %s %v", path, st, b, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// A tenant whose spend reaches its hard budget is marked exhausted in
// the table edges receive, within 2 s of the batch that exhausted it.
func TestBudgetExhaustionReachesTheTable(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, Usage: true, KEK: kek})
	// $0.0001 = 100,000 nano-USD.
	fleet(t, c, 0.0001)
	m := c.Leader()
	nc := joinEdge(t, c, "edge-1", m.NATSURL())
	tables, err := nc.SubscribeSync(tablewire.SubjectUpdate)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	now := time.Now()
	r := &usagev1.Record{RequestId: "big", Tenant: "acme", Key: "k1", Model: "m1", Node: "edge-1", CostNanoUsd: 99_999, UnixMs: now.UnixMilli()}
	publish(t, js, "edge-1", r, "big")
	waitTotals(t, m, sent{requests: 1, nano: 99_999})
	if len(m.Node.FSM().State().BudgetStates()) != 0 {
		t.Fatal("exhausted below the budget")
	}
	r = &usagev1.Record{RequestId: "last", Tenant: "acme", Key: "k1", Model: "m1", Node: "edge-1", CostNanoUsd: 1, UnixMs: now.UnixMilli()}
	publish(t, js, "edge-1", r, "last")
	var applied time.Time
	wait.For(t, 10*time.Second, "the budget state", func() bool {
		if len(m.Node.FSM().State().BudgetStates()) == 1 {
			applied = time.Now()
			return true
		}
		return false
	})
	_, end := usagewire.PeriodBounds("day", now)
	for {
		msg, err := tables.NextMsg(time.Until(applied.Add(2 * time.Second)))
		if err != nil {
			t.Fatalf("no table marking the tenant exhausted within 2 s of the batch: %v", err)
		}
		u, err := tablewire.DecodeUpdate(msg.Data, tablewire.DefaultMaxBytes)
		if err != nil {
			t.Fatal(err)
		}
		states := u.GetFull().GetEntities().GetTenantStates()
		if d := u.GetDelta(); d != nil {
			states = d.GetUpserts().GetTenantStates()
		}
		if len(states) == 1 && states[0].GetTenant() == "acme" && states[0].GetExhausted() && states[0].GetExhaustedUntilUnixMs() == end.UnixMilli() {
			t.Logf("exhaustion reached the edge %s after the batch applied", time.Since(applied).Round(time.Millisecond))
			break
		}
	}
	// A raised budget lifts it without waiting for traffic: the leader
	// proposes an empty batch when the budget states are stale.
	res, err := m.Node.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: "raise", Ops: []*controlv1.Op{
		fsm.PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 1, HardLimit: true, BudgetPeriod: "day"})}})
	if err != nil || res.GetCode() != "" {
		t.Fatalf("raise the budget: %v %v", res, err)
	}
	wait.For(t, 10*time.Second, "the exhaustion to lift", func() error {
		if bs := m.Node.FSM().State().BudgetStates(); len(bs) != 0 {
			return fmt.Errorf("budget states %v", bs)
		}
		return nil
	})
	for {
		msg, err := tables.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no table lifting the exhaustion: %v", err)
		}
		u, _ := tablewire.DecodeUpdate(msg.Data, tablewire.DefaultMaxBytes)
		if d := u.GetDelta(); d != nil && len(d.GetDeletes().GetTenantStates()) == 1 || u.GetFull() != nil && len(u.GetFull().GetEntities().GetTenantStates()) == 0 {
			return
		}
	}
}

// TestTenThousandRecordsFewRaftWrites measures how many Raft writes a
// 10,000-record run makes: records published as fast as an edge can,
// aggregated in batches.
func TestTenThousandRecordsFewRaftWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 10,000 records")
	}
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, Usage: true, KEK: kek})
	fleet(t, c, 1000)
	m := c.Leader()
	nc := joinEdge(t, c, "edge-1", m.NATSURL())
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2000))
	const n = 10000
	now := time.Now()
	var want sent
	before := m.Node.Stats().LastIndex
	for i := range n {
		r := record(i, "edge-1", now)
		want.add(r)
		b, _ := proto.Marshal(r)
		msg := nats.NewMsg(usagewire.UsageSubject("edge-1"))
		msg.Data = b
		if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(r.GetRequestId())); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(60 * time.Second):
				t.Fatalf("%d publishes still pending", js.PublishAsyncPending())
			}
		}
	}
	waitTotals(t, m, want)
	writes := m.Node.Stats().LastIndex - before
	st := m.Usage().Stats()
	// A batch whose Raft outcome was unknown is proposed again (or
	// redelivered), and its records count as duplicates then: only the
	// totals are exact, and they are checked above.
	if writes > n/10 {
		t.Fatalf("%d records: %d applied, %d Raft writes (%d batches)", n, st.Applied, writes, st.Batches)
	}
	var resp api.UsageResponse
	getJSON(t, m, "/v1/control/usage", &resp)
	if len(resp.Rows) != 1 || resp.Rows[0].Requests != want.requests || resp.Rows[0].TokensIn != want.in ||
		resp.Rows[0].TokensOut != want.out || resp.Rows[0].CostNanoUSD != want.nano || resp.Rows[0].CostUSD != usage.USD(want.nano) {
		t.Fatalf("API totals %+v, sent %+v", resp.Rows, want)
	}
	t.Logf("usage: records=%d raft_writes=%d batches=%d api: requests=%d tokens_in=%d tokens_out=%d cost_usd=%s cost_nano_usd=%d",
		n, writes, st.Batches, resp.Rows[0].Requests, resp.Rows[0].TokensIn, resp.Rows[0].TokensOut, resp.Rows[0].CostUSD, resp.Rows[0].CostNanoUSD)
}
