package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

func newClient(t *testing.T, c *controltest.Cluster, first int) *client.Client {
	t.Helper()
	var addrs []string
	for i := range c.Members {
		addrs = append(addrs, c.Members[(first+i)%len(c.Members)].URL)
	}
	cl, err := client.New(client.Config{Addrs: addrs, Token: controltest.AdminToken, RetryTimeout: 45 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestLeaderKillUnderLoad kills the leader while 48 clients send 500
// writes. Every acknowledged write must be on every node afterwards,
// applied once. (48 at a time, not 500: under -race on a loaded
// machine, 500 goroutines at once starved the test cluster's 100 ms
// leader lease into an election storm that acknowledged nothing for a
// minute, which tests the machine, not failover.)
func TestLeaderKillUnderLoad(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const writes = 500
	var acked sync.Map
	var nacked atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	clients := []*client.Client{newClient(t, c, 0), newClient(t, c, 1), newClient(t, c, 2)}
	var next atomic.Int32
	for w := range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				i := int(next.Add(1)) - 1
				if i >= writes {
					return
				}
				id := fmt.Sprintf("load-%d", i)
				_, err := clients[(i+w)%3].Put(ctx, &controlv1.Region{Id: id, Name: "r"}, client.WriteOptions{RequestID: id})
				if err == nil {
					acked.Store(id, true)
					nacked.Add(1)
				}
			}
		}()
	}
	leader := c.Leader()
	close(start)
	wait.For(t, 60*time.Second, "some writes to be acknowledged", func() bool { return nacked.Load() >= 50 })
	leader.Kill()
	wg.Wait()
	if n := nacked.Load(); n < writes*9/10 {
		t.Fatalf("only %d of %d writes acknowledged across one failover", n, writes)
	}
	leader.Restart()
	c.WaitConverged()
	for _, m := range c.Members {
		st := m.Node.FSM().State()
		applied := m.Applied()
		acked.Range(func(k, _ any) bool {
			id := k.(string)
			if _, ok := st.Get(fsm.KindRegion, id); !ok {
				t.Errorf("%s lost acknowledged write %s", m.Name, id)
			}
			if n := applied[id]; n != 1 {
				t.Errorf("%s applied %s %d times", m.Name, id, n)
			}
			return true
		})
		for id, n := range applied {
			if n > 1 {
				t.Errorf("%s applied %s %d times", m.Name, id, n)
			}
		}
	}
	t.Logf("%d of %d writes acknowledged", nacked.Load(), writes)
}

type regInput struct {
	write bool
	value string
}

// registerModel is a single register: a region's name.
var registerModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return "put(" + in.value + ")"
		}
		return "get() → " + fmt.Sprint(output)
	},
}

// TestLinearizableUnderLeaderKills runs a register workload (a region's
// name, written by put and read with ?consistent) while leaders are
// killed, and checks the history with porcupine.
func TestLinearizableUnderLeaderKills(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := newClient(t, c, 0).Put(ctx, &controlv1.Region{Id: "reg"}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	now := func() int64 { return time.Since(base).Nanoseconds() }
	var mu sync.Mutex
	var history []porcupine.Operation
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient(t, c, w)
			for i := 0; i < 400; i++ {
				select {
				case <-stop:
					return
				default:
				}
				op := porcupine.Operation{ClientId: w, Call: now()}
				if rand.IntN(2) == 0 {
					v := fmt.Sprintf("%d-%d", w, i)
					op.Input = regInput{write: true, value: v}
					_, err := cl.Put(ctx, &controlv1.Region{Id: "reg", Name: v}, client.WriteOptions{})
					op.Return = now()
					if err != nil {
						// Unknown outcome: it may take effect at any
						// time after the call.
						op.Return = math.MaxInt64
					}
				} else {
					op.Input = regInput{}
					m, err := cl.Get(ctx, fsm.KindRegion, "reg", client.ReadOptions{Consistent: true})
					op.Return = now()
					if err != nil {
						continue // a failed read constrains nothing
					}
					op.Output = m.(*controlv1.Region).GetName()
				}
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
			}
		}()
	}
	// Let the workload make progress between kills.
	progress := func() {
		mu.Lock()
		from := len(history)
		mu.Unlock()
		wait.For(t, 60*time.Second, "operations to complete", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(history) >= from+80
		})
	}
	for range 2 {
		progress()
		l := c.Leader()
		l.Kill()
		c.Leader()
		l.Restart()
	}
	progress()
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(history) < 50 {
		t.Fatalf("only %d operations ran", len(history))
	}
	res := porcupine.CheckOperationsTimeout(registerModel, history, 60*time.Second)
	if res == porcupine.Illegal {
		t.Fatalf("history of %d operations is not linearizable", len(history))
	}
	t.Logf("%d operations, result %v", len(history), res)
}

// TestSnapshotsAndRestart covers raft's own snapshots (a node restarted
// far behind catches up through an installed snapshot), and a snapshot
// saved and restored through the API.
func TestSnapshotsAndRestart(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{TrailingLogs: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newClient(t, c, 0)
	put := func(i int) {
		t.Helper()
		if _, err := cl.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("r%d", i), Latitude: float64(i % 90)}, client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		put(i)
	}
	lagging := c.Followers()[0]
	lagging.Kill()
	for i := 20; i < 60; i++ {
		put(i)
	}
	if err := c.Leader().Node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 60; i < 70; i++ {
		put(i)
	}
	lagging.Restart()
	c.WaitConverged()
	if n := lagging.Node.FSM().State().Count(fsm.KindRegion); n != 70 {
		t.Fatalf("restarted node holds %d regions, want 70", n)
	}

	// Restart every node: state comes back from snapshot plus log.
	for _, m := range c.Members {
		m.Node.Snapshot()
	}
	for _, m := range c.Members {
		m.Kill()
	}
	for _, m := range c.Members {
		m.Restart()
	}
	c.WaitConverged()
	if n := c.Leader().Node.FSM().State().Count(fsm.KindRegion); n != 70 {
		t.Fatalf("after a full restart %d regions, want 70", n)
	}

	// Save through the API, damage the state, restore.
	var snap bytes.Buffer
	if _, err := cl.SnapshotSave(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	want := c.Leader().Node.FSM().State()
	for i := range 10 {
		if _, err := cl.Delete(ctx, fsm.KindRegion, fmt.Sprintf("r%d", i), client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := cl.Put(ctx, &controlv1.Region{Id: "r1000"}, client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after, err := cl.SnapshotRestore(ctx, bytes.NewReader(snap.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// Indexes never go backwards, so watchers see the restore.
	if after <= before {
		t.Fatalf("index %d after restore, %d before", after, before)
	}
	c.WaitConverged()
	for _, m := range c.Members {
		got := m.Node.FSM().State()
		for _, r := range want.List(fsm.KindRegion) {
			if _, ok := got.Get(fsm.KindRegion, r.(*controlv1.Region).GetId()); !ok {
				t.Fatalf("%s lacks %s after restore", m.Name, r.(*controlv1.Region).GetId())
			}
		}
		if got.Count(fsm.KindRegion) != 70 {
			t.Fatalf("%s holds %d regions after restore, want 70", m.Name, got.Count(fsm.KindRegion))
		}
	}
	// Writes still work after a restore, and a bad snapshot is refused.
	put(2000)
	if _, err := cl.SnapshotRestore(ctx, bytes.NewReader([]byte("garbage"))); err == nil {
		t.Fatal("a garbage snapshot was accepted")
	}
}

// TestJoinAndRemove grows a single-node cluster to three through the
// API, then removes the leader.
func TestJoinAndRemove(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newClient(t, c, 0)
	if _, err := cl.Put(ctx, &controlv1.Region{Id: "eu"}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m := c.AddMember()
		self, err := cl.Join(ctx, m.URL)
		if err != nil {
			t.Fatal(err)
		}
		if self.ID != m.ID {
			t.Fatalf("joined %s, want %s", self.ID, m.ID)
		}
	}
	c.WaitConverged()
	info, err := cl.Cluster(ctx)
	if err != nil || len(info.Servers) != 3 {
		t.Fatalf("cluster: %+v %v", info, err)
	}
	for _, s := range info.Servers {
		if s.APIAddr == "" {
			t.Errorf("server %s has no API address", s.ID)
		}
	}
	// Removing the leader: it hands over first, and the new leader
	// removes it.
	old := c.Leader()
	cl2 := newClient(t, c, 1)
	if err := cl2.RemovePeer(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "a two-node configuration", func() bool {
		for _, m := range c.Members {
			if m != old && m.Node.IsLeader() {
				srv, err := m.Node.Servers()
				return err == nil && len(srv) == 2
			}
		}
		return false
	})
	old.Kill()
	if _, err := cl2.Put(ctx, &controlv1.Region{Id: "us"}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var apiErr *client.Error
	if err := cl2.RemovePeer(ctx, "no-such-node"); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("removing an unknown node: %v", err)
	}
}

// TestRegisterModelRejectsStaleRead shows the linearizability check can
// fail: a read that misses a write acknowledged before it began is
// illegal.
func TestRegisterModelRejectsStaleRead(t *testing.T) {
	stale := []porcupine.Operation{
		{ClientId: 0, Input: regInput{write: true, value: "a"}, Call: 0, Return: 10},
		{ClientId: 1, Input: regInput{}, Output: "", Call: 20, Return: 30},
	}
	if porcupine.CheckOperations(registerModel, stale) {
		t.Fatal("a stale read passed the linearizability check")
	}
	concurrent := []porcupine.Operation{
		{ClientId: 0, Input: regInput{write: true, value: "a"}, Call: 0, Return: 30},
		{ClientId: 1, Input: regInput{}, Output: "", Call: 10, Return: 20},
	}
	if !porcupine.CheckOperations(registerModel, concurrent) {
		t.Fatal("a read concurrent with a write failed the check")
	}
}

// TestTransferUnderLoad hands leadership over, asked through a follower,
// while writers keep writing: the leader changes, no write fails, and
// none applies twice.
func TestTransferUnderLoad(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old := c.Leader()
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	var ids sync.Map
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient(t, c, w)
			for i := 0; !stop.Load() && i < 2000; i++ {
				id := fmt.Sprintf("tr-%d-%d", w, i)
				if _, err := cl.Put(ctx, &controlv1.Region{Id: id}, client.WriteOptions{RequestID: id}); err != nil {
					errs <- err
					return
				}
				ids.Store(id, true)
			}
		}()
	}
	wait.For(t, 10*time.Second, "some writes", func() bool {
		n := 0
		ids.Range(func(any, any) bool { n++; return n < 20 })
		return n >= 20
	})
	f := c.Followers()[0]
	from, err := newClient(t, c, indexOf(c, f)).Transfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if from != old.ID {
		t.Errorf("transfer reports %s as the old leader, want %s", from, old.ID)
	}
	wait.For(t, 10*time.Second, "a new leader", func() bool { return c.Leader() != old })
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a write failed across the transfer: %v", err)
	}
	c.WaitConverged()
	for _, m := range c.Members {
		applied := m.Applied()
		ids.Range(func(k, _ any) bool {
			if n := applied[k.(string)]; n != 1 {
				t.Errorf("%s applied %s %d times", m.Name, k, n)
			}
			return true
		})
	}
}

func indexOf(c *controltest.Cluster, m *controltest.Member) int {
	for i, x := range c.Members {
		if x == m {
			return i
		}
	}
	return 0
}
