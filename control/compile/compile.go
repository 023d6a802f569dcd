// Package compile turns the control plane's replicated state into the
// routing table edges serve from: one RoutingTable per state, at the
// state's Raft index, validated before anything may publish it.
//
// It is pure: no I/O, no clock, no randomness, so every control node
// compiles the same state to the same bytes. It must never resolve a
// provider's secret_ref (edges do that) and never put one into an error.
package compile

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Config bounds what the compiler accepts.
type Config struct {
	// MaxBytes caps the encoded table, bytes. It must fit in one NATS
	// message: the embedded server's max payload is set above it.
	MaxBytes int
	// Secrets bounds providers' secret_refs; a table naming anything
	// else is rejected. The zero value is tablewire's defaults.
	Secrets tablewire.SecretPolicy
}

// DefaultConfig returns a 4 MiB cap.
func DefaultConfig() Config { return Config{MaxBytes: tablewire.DefaultMaxBytes} }

// Validate checks the config.
func (c Config) Validate() error {
	if c.MaxBytes < 1024 {
		return errors.New("compile: max bytes must be at least 1024")
	}
	return nil
}

// ErrRejected wraps every reason a state does not compile to a table.
var ErrRejected = errors.New("table rejected")

// Table is a compiled, validated table and its encoding.
type Table struct {
	Table *tablev1.RoutingTable
	// Bytes is Table, deterministically encoded.
	Bytes []byte
	// Edge is Table as an edge holding every secret compiles it, for
	// reading what every edge computes from it (such as the nodes a
	// placement resolves to). Its credentials are placeholders.
	Edge *table.Compiled
}

// Compile builds and validates the table for a state. The table passes
// three checks before it is returned: the size cap, the table's own
// consistency (references, a possible target for every routed model) and
// the edge's shared/table validation after conversion, with every
// secret_ref assumed to resolve. An error wraps ErrRejected and says why.
func Compile(cfg Config, s *fsm.State) (*Table, error) {
	return Check(cfg, Build(s))
}

// Build lays a state out as its routing table, sorted, without checking
// it: Compile checks it, and the control API runs tablewire.Validate on
// a write's preview with it.
func Build(s *fsm.State) *tablev1.RoutingTable {
	t := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: s.Index(), Entities: &tablev1.Entities{},
		ClusterId: s.Identity().GetClusterId(), Epoch: s.Identity().GetEpoch()}
	e := t.Entities
	for _, m := range s.List(fsm.KindRegion) {
		e.Regions = append(e.Regions, m.(*controlv1.Region))
	}
	for _, m := range s.List(fsm.KindNode) {
		n := m.(*controlv1.Node)
		if id, ok := s.NodeIdentity(n.GetId()); ok {
			// Edges refuse links from a node the table marks revoked,
			// and certificates issued before its latest join.
			n = proto.Clone(n).(*controlv1.Node)
			n.Revoked, n.JoinedUnixMs = id.GetRevoked(), id.GetJoinedUnixMs()
			if !id.GetRevoked() {
				// Regional leaf nodes admit the node's NATS key from
				// the table (control/leaf).
				n.NatsKey = id.GetNatsKey()
			}
		}
		e.Nodes = append(e.Nodes, n)
	}
	for _, m := range s.List(fsm.KindModel) {
		e.Models = append(e.Models, m.(*controlv1.Model))
	}
	for _, m := range s.List(fsm.KindPlacement) {
		e.Placements = append(e.Placements, m.(*controlv1.Placement))
	}
	for _, m := range s.List(fsm.KindProvider) {
		e.Providers = append(e.Providers, m.(*controlv1.Provider))
	}
	for _, m := range s.List(fsm.KindRoute) {
		e.Routes = append(e.Routes, m.(*controlv1.Route))
	}
	for _, m := range s.List(fsm.KindKey) {
		e.Keys = append(e.Keys, m.(*controlv1.Key))
	}
	for _, m := range s.List(fsm.KindTenant) {
		e.Tenants = append(e.Tenants, m.(*controlv1.Tenant))
	}
	for _, m := range s.List(fsm.KindPrice) {
		e.Prices = append(e.Prices, m.(*controlv1.Price))
	}
	// Budget states come from the replicated spend (fsm/usage.go), so
	// every control node compiles the same table; a state of a tenant
	// deleted since is left out.
	for _, b := range s.BudgetStates() {
		if _, ok := s.Get(fsm.KindTenant, b.GetTenant()); ok {
			e.TenantStates = append(e.TenantStates, &tablev1.TenantState{Tenant: b.GetTenant(), Exhausted: true, ExhaustedUntilUnixMs: b.GetUntilUnixMs()})
		}
	}
	// The state lists by ID already; sorting again makes the order this
	// package's promise rather than the state's.
	tablewire.Sort(e)
	return t
}

// Check validates a table and encodes it: the same checks Compile runs,
// for a table built elsewhere (tests inject bad ones through it).
func Check(cfg Config, t *tablev1.RoutingTable) (*Table, error) {
	if err := tablewire.Validate(t); err != nil {
		return nil, fmt.Errorf("%w at revision %d: %w", ErrRejected, t.GetRevision(), err)
	}
	if err := tablewire.CheckSecretRefs(t, cfg.Secrets); err != nil {
		return nil, fmt.Errorf("%w at revision %d: %w", ErrRejected, t.GetRevision(), err)
	}
	// Every ref resolves to a placeholder: the control plane checks the
	// table's shape; whether a secret exists is each edge's concern.
	edge, err := tablewire.CompileEdge(t)
	if err != nil {
		return nil, fmt.Errorf("%w at revision %d: %w", ErrRejected, t.GetRevision(), err)
	}
	b, err := tablewire.Encode(t)
	if err != nil {
		return nil, fmt.Errorf("%w at revision %d: encode: %w", ErrRejected, t.GetRevision(), err)
	}
	max := cfg.MaxBytes
	if max <= 0 {
		max = tablewire.DefaultMaxBytes
	}
	if len(b) > max {
		return nil, fmt.Errorf("%w at revision %d: %w: %d bytes, cap %d", ErrRejected, t.GetRevision(), tablewire.ErrTooLarge, len(b), max)
	}
	return &Table{Table: t, Bytes: b, Edge: edge}, nil
}

// Equal reports whether two compiled tables hold the same entities,
// whatever their revisions.
func Equal(a, b *tablev1.RoutingTable) bool { return proto.Equal(a.GetEntities(), b.GetEntities()) }
