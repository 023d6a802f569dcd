package fsm

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	iradix "github.com/hashicorp/go-immutable-radix"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// TypeUsageBatch is a UsageBatch: served requests added to the usage
// totals. It carries the IgnoreUnknown bit: a node built before usage
// existed skips batches and keeps the fleet state, lacking only totals,
// rather than halting the cluster during a rolling upgrade.
const TypeUsageBatch Type = 30 | IgnoreUnknown

// Usage bookkeeping limits. They are part of the state machine's
// definition: replicas with other values would diverge.
const (
	// UsageRetention is how long an applied request ID is remembered, by
	// batch time: JetStream's duplicate window plus a day and more of an
	// edge spooling records while the bus is away.
	UsageRetention = 48 * time.Hour
	// MaxUsageBatch bounds the records of one batch.
	MaxUsageBatch = 10000
	// maxUsageField bounds a record's request ID, tenant, key and model.
	maxUsageField = 256
)

// Tree keys of the usage state:
//
//	"u/<tenant>\x00<hour, 12 digits>\x00<key>\x00<model>" → *controlv1.UsageTotal
//	"us/<node>\x00<epoch, 16 hex digits>" → *controlv1.UsageSeq: the
//	                                        records applied of one edge run
//	"ua/<request>"                        → *controlv1.AppliedUsage, for
//	                                        records without a run and seq
//	"uo/<applied ms, 20 digits>/<request>" → request ID, oldest first, for pruning
//	"b/<tenant>"                          → *controlv1.BudgetState
//	"ud/<tenant>\x00<day, 8 digits>"      → daySpend, derived from the
//	                                        totals (rebuilt on restore, not
//	                                        in snapshots): budget periods
//	                                        start on UTC days, so a period's
//	                                        spend is at most 31 lookups
//
// Tenant, key and model never hold a NUL (checked per record), so a
// tenant's totals are one prefix, ordered by hour.
func totalPrefix(tenant string) []byte { return []byte("u/" + tenant + "\x00") }
func totalKey(tenant string, hour int64, key, model string) []byte {
	return fmt.Appendf(nil, "u/%s\x00%012d\x00%s\x00%s", tenant, hour, key, model)
}
func appliedKey(id string) []byte { return []byte("ua/" + id) }
func runKey(node string, epoch uint64) []byte {
	return fmt.Appendf(nil, "us/%s\x00%016x", node, epoch)
}
func appliedOrderKey(ms int64, id string) []byte {
	return fmt.Appendf(nil, "uo/%020d/%s", ms, id)
}
func budgetKey(tenant string) []byte { return []byte("b/" + tenant) }
func dayPrefix(tenant string) []byte { return []byte("ud/" + tenant + "\x00") }
func dayKey(tenant string, day int64) []byte {
	return fmt.Appendf(nil, "ud/%s\x00%08d", tenant, day)
}

// daySpend is a tenant's spend on one UTC day, nano-USD.
type daySpend struct{ day, nano int64 }

// addDaySpend adds cost to a tenant's day.
func addDaySpend(txn *iradix.Txn, tenant string, day, nano int64) {
	k := dayKey(tenant, day)
	d := daySpend{day: day}
	if old, ok := txn.Get(k); ok {
		d = old.(daySpend)
	}
	d.nano = satAdd(d.nano, nano)
	txn.Insert(k, d)
}

const msPerDay = 24 * int64(time.Hour/time.Millisecond)

const msPerHour = int64(time.Hour / time.Millisecond)

const msPerMinute = int64(time.Minute / time.Millisecond)

// UsageNow returns the time of the last usage batch applied, Unix
// milliseconds (0 before the first).
func (s *State) UsageNow() int64 { return s.usageNow }

// UsageApplied reports whether a request ID's record was applied and is
// still remembered, for records without a run and seq.
func (s *State) UsageApplied(requestID string) bool {
	_, ok := s.tree.Get(appliedKey(requestID))
	return ok
}

// UsageRuns calls fn for every edge run remembered, ordered by node and
// epoch, until fn returns false.
func (s *State) UsageRuns(fn func(*controlv1.UsageSeq) bool) {
	s.tree.Root().WalkPrefix([]byte("us/"), func(_ []byte, v any) bool {
		return !fn(v.(*controlv1.UsageSeq))
	})
}

// hasRun reports whether r carries its edge run and seq, by which it is
// deduplicated.
func hasRun(r *controlv1.UsageRecord) bool {
	n := r.GetNode()
	return r.GetSeq() > 0 && r.GetEpoch() != 0 && n != "" && len(n) <= maxUsageField && strings.IndexByte(n, 0) < 0
}

// seqApplied reports whether seq is among run's applied records.
func seqApplied(run *controlv1.UsageSeq, seq uint64) bool {
	if seq <= run.GetHigh() {
		return true
	}
	_, found := slices.BinarySearch(run.GetAbove(), seq)
	return found
}

// addSeq records seq (not yet applied) in run, moving high up over the
// seqs that now follow it without a gap.
func addSeq(run *controlv1.UsageSeq, seq uint64) {
	if seq == run.High+1 {
		run.High = seq
	} else {
		i, _ := slices.BinarySearch(run.Above, seq)
		run.Above = slices.Insert(run.Above, i, seq)
	}
	n := 0
	for n < len(run.Above) && run.Above[n] == run.High+1 {
		run.High = run.Above[n]
		n++
	}
	if n > 0 {
		run.Above = slices.Delete(run.Above, 0, n)
	}
}

// UsageTotals calls fn for every total, ordered by tenant, hour, key and
// model, until fn returns false. A non-empty tenant limits the walk to
// that tenant's totals.
func (s *State) UsageTotals(tenant string, fn func(*controlv1.UsageTotal) bool) {
	prefix := []byte("u/")
	if tenant != "" {
		prefix = totalPrefix(tenant)
	}
	s.tree.Root().WalkPrefix(prefix, func(_ []byte, v any) bool {
		return !fn(v.(*controlv1.UsageTotal))
	})
}

// BudgetStates returns the tenants found out of budget, sorted by tenant.
func (s *State) BudgetStates() []*controlv1.BudgetState {
	var out []*controlv1.BudgetState
	s.tree.Root().WalkPrefix([]byte("b/"), func(_ []byte, v any) bool {
		out = append(out, v.(*controlv1.BudgetState))
		return false
	})
	return out
}

// UsageResult counts what one batch did; it is returned in the Result's
// message as "applied=N duplicate=N malformed=N".
type UsageResult struct{ Applied, Duplicate, Malformed int }

// ParseUsageResult reads a UsageBatch's Result message.
func ParseUsageResult(msg string) (UsageResult, bool) {
	var r UsageResult
	_, err := fmt.Sscanf(msg, "applied=%d duplicate=%d malformed=%d", &r.Applied, &r.Duplicate, &r.Malformed)
	return r, err == nil
}

// CheckUsageRecord reports why a record cannot be added to the totals,
// or nil. The aggregator drops such records before proposing them; the
// state machine checks again, so a bad record is dropped, never applied.
func CheckUsageRecord(r *controlv1.UsageRecord) error {
	if r.GetRequestId() == "" {
		return fmt.Errorf("no request_id")
	}
	for _, f := range []struct{ name, v string }{
		{"request_id", r.GetRequestId()}, {"tenant", r.GetTenant()}, {"key", r.GetKey()}, {"model", r.GetModel()},
	} {
		if len(f.v) > maxUsageField {
			return fmt.Errorf("%s is longer than %d bytes", f.name, maxUsageField)
		}
		if strings.IndexByte(f.v, 0) >= 0 {
			return fmt.Errorf("%s holds a NUL", f.name)
		}
	}
	if r.GetCostNanoUsd() < 0 {
		return fmt.Errorf("negative cost")
	}
	// Within a year of the epoch is a broken clock, and past 9999 does
	// not format as an hour.
	if r.GetUnixMs() < 365*24*msPerHour || r.GetUnixMs() > 253402300799999 {
		return fmt.Errorf("unix_ms %d is out of range", r.GetUnixMs())
	}
	return nil
}

// applyUsage adds a batch's new records to the totals, forgets applied
// request IDs older than UsageRetention, and recomputes which tenants are
// out of budget. It returns the batch time it used and whether the
// budget states changed (which changes the routing table).
func applyUsage(txn *iradix.Txn, prevNow int64, b *controlv1.UsageBatch) (res *controlv1.Result, now int64, budgetsChanged bool) {
	if len(b.GetRecords()) > MaxUsageBatch {
		return errResult(invalid("records", "a usage batch holds at most %d records", MaxUsageBatch)), prevNow, false
	}
	// Batch time never goes back, whichever leader's clock proposed it.
	now = max(prevNow, b.GetNowUnixMs())
	pruneApplied(txn, now-UsageRetention.Milliseconds())
	if now/msPerMinute != prevNow/msPerMinute {
		pruneRuns(txn, now-UsageRetention.Milliseconds())
	}
	// The runs this batch touches, copied once: values in the tree are
	// shared with older states and never changed in place.
	runs := map[string]*controlv1.UsageSeq{}
	var r UsageResult
	for _, rec := range b.GetRecords() {
		tracked := hasRun(rec)
		if tracked {
			k := runKey(rec.GetNode(), rec.GetEpoch())
			run := runs[string(k)]
			if run == nil {
				if old, ok := txn.Get(k); ok {
					run = proto.Clone(old.(*controlv1.UsageSeq)).(*controlv1.UsageSeq)
				} else {
					run = &controlv1.UsageSeq{Node: rec.GetNode(), Epoch: rec.GetEpoch()}
				}
				runs[string(k)] = run
			}
			if seqApplied(run, rec.GetSeq()) {
				r.Duplicate++
				continue
			}
			// A malformed record uses up its seq too, or the run's
			// numbers would never close over it.
			addSeq(run, rec.GetSeq())
			run.SeenUnixMs = now
		}
		if CheckUsageRecord(rec) != nil {
			r.Malformed++
			continue
		}
		id := rec.GetRequestId()
		if !tracked {
			if _, dup := txn.Get(appliedKey(id)); dup {
				r.Duplicate++
				continue
			}
			txn.Insert(appliedKey(id), &controlv1.AppliedUsage{RequestId: id, AppliedUnixMs: now})
			txn.Insert(appliedOrderKey(now, id), id)
		}
		hour := rec.GetUnixMs() / msPerHour
		k := totalKey(rec.GetTenant(), hour, rec.GetKey(), rec.GetModel())
		t := &controlv1.UsageTotal{Tenant: rec.GetTenant(), Key: rec.GetKey(), Model: rec.GetModel(), Hour: hour}
		if old, ok := txn.Get(k); ok {
			o := old.(*controlv1.UsageTotal)
			t.Requests, t.TokensIn, t.TokensOut, t.CostNanoUsd = o.GetRequests(), o.GetTokensIn(), o.GetTokensOut(), o.GetCostNanoUsd()
		}
		t.Requests++
		t.TokensIn += rec.GetTokensIn()
		t.TokensOut += rec.GetTokensOut()
		t.CostNanoUsd = satAdd(t.CostNanoUsd, rec.GetCostNanoUsd())
		txn.Insert(k, t)
		addDaySpend(txn, rec.GetTenant(), rec.GetUnixMs()/msPerDay, rec.GetCostNanoUsd())
		r.Applied++
	}
	for k, run := range runs {
		txn.Insert([]byte(k), run)
	}
	budgetsChanged = updateBudgets(txn, now)
	return &controlv1.Result{Message: fmt.Sprintf("applied=%d duplicate=%d malformed=%d", r.Applied, r.Duplicate, r.Malformed)}, now, budgetsChanged
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// pruneApplied forgets request IDs applied before horizon (batch time).
func pruneApplied(txn *iradix.Txn, horizon int64) {
	bound := appliedOrderKey(horizon, "")
	var old [][]byte
	var ids []string
	it := txn.Root().Iterator()
	it.SeekPrefix([]byte("uo/"))
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		if bytes.Compare(k, bound) >= 0 {
			break
		}
		old, ids = append(old, k), append(ids, v.(string))
	}
	for i, k := range old {
		txn.Delete(k)
		txn.Delete(appliedKey(ids[i]))
	}
}

// pruneRuns forgets the edge runs with no record applied since horizon
// (batch time). It runs when a batch starts a new minute: the runs are
// few (one per edge process started in UsageRetention), so a walk is
// cheap, and a batch time decides it, so every replica agrees.
func pruneRuns(txn *iradix.Txn, horizon int64) {
	var old [][]byte
	txn.Root().WalkPrefix([]byte("us/"), func(k []byte, v any) bool {
		if v.(*controlv1.UsageSeq).GetSeenUnixMs() < horizon {
			old = append(old, k)
		}
		return false
	})
	for _, k := range old {
		txn.Delete(k)
	}
}

// tenantSpend returns a tenant's spend in nano-USD over the UTC days
// from start's to end's (exclusive); budget periods start on UTC days.
func tenantSpend(root *iradix.Node, tenant string, start, end time.Time) int64 {
	from, to := start.UnixMilli()/msPerDay, end.UnixMilli()/msPerDay
	prefix := dayPrefix(tenant)
	it := root.Iterator()
	it.SeekLowerBound(dayKey(tenant, from))
	var sum int64
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		if !bytes.HasPrefix(k, prefix) {
			break
		}
		d := v.(daySpend)
		if d.day >= to {
			break
		}
		sum = satAdd(sum, d.nano)
	}
	return sum
}

// TenantSpend returns a tenant's spend in its budget period containing
// at, nano-USD, and the period's bounds.
func (s *State) TenantSpend(tenant string, at time.Time) (spend int64, start, end time.Time) {
	period := ""
	if m, ok := s.Get(KindTenant, tenant); ok {
		period = m.(*controlv1.Tenant).GetBudgetPeriod()
	}
	start, end = usagewire.PeriodBounds(period, at)
	return tenantSpend(s.tree.Root(), tenant, start, end), start, end
}

// BudgetNano is a budget in USD as nano-USD.
func BudgetNano(usd float64) int64 {
	v := math.Round(usd * usagewire.NanoPerUSD)
	if v >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// budgetStates computes, at batch time now, the tenants that spent their
// budget under a hard limit, keyed by tenant.
func budgetStates(root *iradix.Node, now int64) map[string]*controlv1.BudgetState {
	out := map[string]*controlv1.BudgetState{}
	at := time.UnixMilli(now)
	root.WalkPrefix([]byte("e/"+KindTenant+"/"), func(_ []byte, v any) bool {
		t := v.(*controlv1.Tenant)
		if !t.GetHardLimit() || !(t.GetMonthlyBudget() > 0) {
			return false
		}
		start, end := usagewire.PeriodBounds(t.GetBudgetPeriod(), at)
		if spend := tenantSpend(root, t.GetId(), start, end); spend >= BudgetNano(t.GetMonthlyBudget()) {
			out[t.GetId()] = &controlv1.BudgetState{Tenant: t.GetId(), SpendNanoUsd: spend, UntilUnixMs: end.UnixMilli()}
		}
		return false
	})
	return out
}

// updateBudgets rewrites the budget states for batch time now and
// reports whether the set of exhausted tenants or their periods changed.
// The spend a state records is refreshed only along with such a change,
// so a batch that changes nothing else leaves the table alone.
func updateBudgets(txn *iradix.Txn, now int64) bool {
	want := budgetStates(txn.Root(), now)
	changed := false
	var gone []string
	txn.Root().WalkPrefix([]byte("b/"), func(_ []byte, v any) bool {
		b := v.(*controlv1.BudgetState)
		if w, ok := want[b.GetTenant()]; !ok {
			gone = append(gone, b.GetTenant())
		} else if w.GetUntilUnixMs() == b.GetUntilUnixMs() {
			delete(want, b.GetTenant()) // unchanged
		}
		return false
	})
	for _, t := range gone {
		txn.Delete(budgetKey(t))
		changed = true
	}
	// In a fixed order, as everything in Apply.
	for _, t := range slices.Sorted(maps.Keys(want)) {
		txn.Insert(budgetKey(t), want[t])
		changed = true
	}
	return changed
}

// BudgetsStale reports whether a usage batch at now would change the
// budget states: a period ended, a budget or hard limit changed, a tenant
// went. The leader's aggregator proposes an empty batch then, so edges
// learn it without waiting for traffic.
func (s *State) BudgetsStale(now int64) bool {
	now = max(now, s.usageNow)
	want := budgetStates(s.tree.Root(), now)
	stale := false
	n := 0
	s.tree.Root().WalkPrefix([]byte("b/"), func(_ []byte, v any) bool {
		b := v.(*controlv1.BudgetState)
		n++
		if w, ok := want[b.GetTenant()]; !ok || w.GetUntilUnixMs() != b.GetUntilUnixMs() {
			stale = true
			return true
		}
		return false
	})
	return stale || n != len(want)
}
