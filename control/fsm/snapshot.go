package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	iradix "github.com/hashicorp/go-immutable-radix"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// snapshotMagic starts every snapshot, so a restore of some other file
// fails clearly instead of emptying the fleet.
const snapshotMagic = "MRDNCTL1"

// snapshotVersion is Snapshot.version.
const snapshotVersion = 1

// maxSnapshot bounds a snapshot read, bytes.
const maxSnapshot = 1 << 30

// ErrBadSnapshot is a snapshot that cannot be read.
var ErrBadSnapshot = errors.New("bad snapshot")

// WriteTo writes the state as a snapshot: the magic, a length and a
// Snapshot message. The State is immutable, so this runs while applies
// continue.
func (s *State) WriteTo(w io.Writer) (int64, error) {
	snap := &controlv1.Snapshot{Version: snapshotVersion, Index: s.index, DedupSeq: s.dedupSeq}
	s.tree.Root().Walk(func(k []byte, v any) bool {
		switch m := v.(type) {
		case *controlv1.Region:
			snap.Regions = append(snap.Regions, m)
		case *controlv1.Node:
			snap.Nodes = append(snap.Nodes, m)
		case *controlv1.Model:
			snap.Models = append(snap.Models, m)
		case *controlv1.Placement:
			snap.Placements = append(snap.Placements, m)
		case *controlv1.Provider:
			snap.Providers = append(snap.Providers, m)
		case *controlv1.Route:
			snap.Routes = append(snap.Routes, m)
		case *controlv1.Key:
			snap.Keys = append(snap.Keys, m)
		case *controlv1.Tenant:
			snap.Tenants = append(snap.Tenants, m)
		case *controlv1.Price:
			snap.Prices = append(snap.Prices, m)
		case *controlv1.Member:
			snap.Members = append(snap.Members, m)
		case *controlv1.ClusterIdentity:
			snap.Identity = m
		}
		return false
	})
	// Oldest first, so a restore rebuilds the eviction order.
	s.tree.Root().WalkPrefix([]byte("s/"), func(_ []byte, v any) bool {
		r, _ := s.tree.Get(dedupKey(v.(string)))
		snap.Dedup = append(snap.Dedup, r.(*controlv1.Dedup))
		return false
	})
	snap.Fleet = s.identitySnapshot()
	snap.UsageNowUnixMs = s.usageNow
	s.UsageTotals("", func(t *controlv1.UsageTotal) bool {
		snap.UsageTotals = append(snap.UsageTotals, t)
		return true
	})
	s.tree.Root().WalkPrefix([]byte("uo/"), func(_ []byte, v any) bool {
		a, _ := s.tree.Get(appliedKey(v.(string)))
		snap.UsageApplied = append(snap.UsageApplied, a.(*controlv1.AppliedUsage))
		return false
	})
	s.UsageRuns(func(r *controlv1.UsageSeq) bool {
		snap.UsageSeqs = append(snap.UsageSeqs, r)
		return true
	})
	snap.BudgetStates = s.BudgetStates()
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		return 0, fmt.Errorf("encode snapshot: %w", err)
	}
	hdr := make([]byte, len(snapshotMagic)+8)
	copy(hdr, snapshotMagic)
	binary.BigEndian.PutUint64(hdr[len(snapshotMagic):], uint64(len(body)))
	n, err := w.Write(hdr)
	if err != nil {
		return int64(n), fmt.Errorf("write snapshot: %w", err)
	}
	m, err := w.Write(body)
	if err != nil {
		return int64(n + m), fmt.Errorf("write snapshot: %w", err)
	}
	return int64(n + m), nil
}

// ReadState reads a snapshot written by WriteTo.
func ReadState(r io.Reader) (*State, error) {
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a Meridian control snapshot", ErrBadSnapshot)
	}
	size := binary.BigEndian.Uint64(hdr[len(snapshotMagic):])
	if size > maxSnapshot {
		return nil, fmt.Errorf("%w: %d bytes is over the %d limit", ErrBadSnapshot, size, maxSnapshot)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrBadSnapshot, err)
	}
	snap := &controlv1.Snapshot{}
	if err := proto.Unmarshal(body, snap); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if snap.GetVersion() != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrBadSnapshot, snap.GetVersion(), snapshotVersion)
	}
	txn := iradix.New().Txn()
	var ents []proto.Message
	for _, m := range snap.GetRegions() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetNodes() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetModels() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetPlacements() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetProviders() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetRoutes() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetKeys() {
		ents = append(ents, m)
		txn.Insert(hashKey(m.GetHash()), m.GetId())
	}
	for _, m := range snap.GetTenants() {
		ents = append(ents, m)
	}
	for _, m := range snap.GetPrices() {
		ents = append(ents, m)
	}
	for _, m := range ents {
		k, _ := KindOf(m)
		txn.Insert(entityKey(k.Name, k.ID(m)), m)
	}
	for _, m := range snap.GetMembers() {
		txn.Insert(memberKey(m.GetId()), m)
	}
	restoreIdentity(txn, snap.GetFleet())
	if id := snap.GetIdentity(); id != nil {
		txn.Insert(identityKey, id)
	}
	for _, d := range snap.GetDedup() {
		txn.Insert(dedupKey(d.GetRequestId()), d)
		txn.Insert(seqKey(d.GetSeq()), d.GetRequestId())
	}
	for _, t := range snap.GetUsageTotals() {
		txn.Insert(totalKey(t.GetTenant(), t.GetHour(), t.GetKey(), t.GetModel()), t)
		addDaySpend(txn, t.GetTenant(), t.GetHour()*msPerHour/msPerDay, t.GetCostNanoUsd())
	}
	for _, a := range snap.GetUsageApplied() {
		txn.Insert(appliedKey(a.GetRequestId()), a)
		txn.Insert(appliedOrderKey(a.GetAppliedUnixMs(), a.GetRequestId()), a.GetRequestId())
	}
	for _, r := range snap.GetUsageSeqs() {
		txn.Insert(runKey(r.GetNode(), r.GetEpoch()), r)
	}
	for _, b := range snap.GetBudgetStates() {
		txn.Insert(budgetKey(b.GetTenant()), b)
	}
	return &State{tree: txn.CommitOnly(), index: snap.GetIndex(), dedupSeq: snap.GetDedupSeq(), usageNow: snap.GetUsageNowUnixMs()}, nil
}

// WithIndex returns a copy of s that reports index i. A snapshot restored
// by an operator is renumbered past the current index, so indexes never
// go backwards for blocking queries and watchers.
func (s *State) WithIndex(i uint64) *State {
	c := *s
	c.index = i
	return &c
}

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(r io.Reader) error {
	s, err := ReadState(r)
	if err != nil {
		return err
	}
	f.publish(s)
	return nil
}
