package fsm

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/webhook"
)

// Entity kinds, as named in Op.kind, error messages and the API's paths
// (the path uses the plural, Kind.Plural).
const (
	KindRegion    = "region"
	KindNode      = "node"
	KindModel     = "model"
	KindPlacement = "placement"
	KindProvider  = "provider"
	KindRoute     = "route"
	KindKey       = "key"
	KindTenant    = "tenant"
	KindPrice     = "price"
)

// Route strategies. "ordered" is shared/table's; the others are the
// strategies the routing design names, which the compiler maps to the
// edge's router.
var Strategies = []string{
	table.StrategyOrdered, "nearest", "fastest", "cheapest", "weighted", "local-first", "least-busy",
}

// Kind describes one entity kind.
type Kind struct {
	// Name is the singular name, for example "region".
	Name string
	// Plural names the kind in API paths, for example "regions".
	Plural string
	// New returns an empty entity of this kind.
	New func() proto.Message
	// ID returns an entity's key: its id field, a route's model, or a
	// price's "provider/model".
	ID func(proto.Message) string
	// validate checks an entity on its own, without the rest of the state.
	validate func(proto.Message) error
	// refs lists the entities an entity points at.
	refs func(proto.Message) []ref
	// deps are the kinds whose entities may point at this kind, listed
	// so a delete scans only those.
	deps []string
}

// ref is a reference from one entity's field to another entity.
type ref struct {
	field string
	kind  string
	id    string
}

// Kinds lists every entity kind, in dependency order: an entity refers
// only to kinds listed before it.
var Kinds []*Kind

var kindsByName = map[string]*Kind{}

// KindByName returns the kind with the given singular or plural name.
func KindByName(name string) (*Kind, bool) {
	k, ok := kindsByName[name]
	return k, ok
}

// KindOf returns the kind of an entity message.
func KindOf(m proto.Message) (*Kind, bool) {
	var name string
	switch m.(type) {
	case *controlv1.Region:
		name = KindRegion
	case *controlv1.Node:
		name = KindNode
	case *controlv1.Model:
		name = KindModel
	case *controlv1.Placement:
		name = KindPlacement
	case *controlv1.Provider:
		name = KindProvider
	case *controlv1.Route:
		name = KindRoute
	case *controlv1.Key:
		name = KindKey
	case *controlv1.Tenant:
		name = KindTenant
	case *controlv1.Price:
		name = KindPrice
	default:
		return nil, false
	}
	return kindsByName[name], true
}

// PutOp returns an op that creates or replaces m.
func PutOp(m proto.Message) *controlv1.Op {
	op := &controlv1.Op{Action: controlv1.Op_ACTION_PUT}
	setEntity(op, m)
	return op
}

// CreateOp returns an op that creates m, failing if it exists.
func CreateOp(m proto.Message) *controlv1.Op {
	op := &controlv1.Op{Action: controlv1.Op_ACTION_CREATE}
	setEntity(op, m)
	return op
}

// DeleteOp returns an op that deletes an entity.
func DeleteOp(kind, id string) *controlv1.Op {
	return &controlv1.Op{Action: controlv1.Op_ACTION_DELETE, Kind: kind, Id: id}
}

func setEntity(op *controlv1.Op, m proto.Message) {
	switch e := m.(type) {
	case *controlv1.Region:
		op.Entity = &controlv1.Op_Region{Region: e}
	case *controlv1.Node:
		op.Entity = &controlv1.Op_Node{Node: e}
	case *controlv1.Model:
		op.Entity = &controlv1.Op_Model{Model: e}
	case *controlv1.Placement:
		op.Entity = &controlv1.Op_Placement{Placement: e}
	case *controlv1.Provider:
		op.Entity = &controlv1.Op_Provider{Provider: e}
	case *controlv1.Route:
		op.Entity = &controlv1.Op_Route{Route: e}
	case *controlv1.Key:
		op.Entity = &controlv1.Op_Key{Key: e}
	case *controlv1.Tenant:
		op.Entity = &controlv1.Op_Tenant{Tenant: e}
	case *controlv1.Price:
		op.Entity = &controlv1.Op_Price{Price: e}
	}
}

// opEntity returns the entity a put op carries, or nil.
func opEntity(op *controlv1.Op) proto.Message {
	switch e := op.GetEntity().(type) {
	case *controlv1.Op_Region:
		return e.Region
	case *controlv1.Op_Node:
		return e.Node
	case *controlv1.Op_Model:
		return e.Model
	case *controlv1.Op_Placement:
		return e.Placement
	case *controlv1.Op_Provider:
		return e.Provider
	case *controlv1.Op_Route:
		return e.Route
	case *controlv1.Op_Key:
		return e.Key
	case *controlv1.Op_Tenant:
		return e.Tenant
	case *controlv1.Op_Price:
		return e.Price
	}
	return nil
}

// Limits on entity fields. They bound the state's size and keep a single
// bad write from producing a table an edge would reject.
const (
	maxIDLen      = 64
	maxModelIDLen = 128
	maxTextLen    = 256
	maxList       = 64
	maxLabels     = 64
	maxDesired    = 10000
)

var (
	idPattern      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	modelIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hashPattern    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	labelPattern   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
)

func invalid(field, format string, args ...any) error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

func checkID(field, id string) error {
	if id == "" {
		return invalid(field, "is required")
	}
	if len(id) > maxIDLen {
		return invalid(field, "is longer than %d characters", maxIDLen)
	}
	if !idPattern.MatchString(id) {
		return invalid(field, "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")
	}
	return nil
}

func checkModelID(field, id string) error {
	if id == "" {
		return invalid(field, "is required")
	}
	if len(id) > maxModelIDLen {
		return invalid(field, "is longer than %d characters", maxModelIDLen)
	}
	if !modelIDPattern.MatchString(id) {
		return invalid(field, "must start with a letter or digit and hold only letters, digits and . _ : / @ + -")
	}
	return nil
}

func checkText(field, s string) error {
	if len(s) > maxTextLen {
		return invalid(field, "is longer than %d characters", maxTextLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "must not hold control characters")
		}
	}
	return nil
}

func checkFinite(field string, v, lo, hi float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || v > hi {
		return invalid(field, "must be between %g and %g", lo, hi)
	}
	return nil
}

// maxMoney bounds prices and budgets, USD.
const maxMoney = 1e9

func validateRegion(m proto.Message) error {
	r := m.(*controlv1.Region)
	if err := checkID("id", r.GetId()); err != nil {
		return err
	}
	if err := checkText("name", r.GetName()); err != nil {
		return err
	}
	if err := checkFinite("latitude", r.GetLatitude(), -90, 90); err != nil {
		return err
	}
	return checkFinite("longitude", r.GetLongitude(), -180, 180)
}

func validateNode(m proto.Message) error {
	n := m.(*controlv1.Node)
	if err := checkID("id", n.GetId()); err != nil {
		return err
	}
	if err := checkID("region", n.GetRegion()); err != nil {
		return err
	}
	if n.GetRevoked() || n.GetJoinedUnixMs() != 0 {
		return invalid("revoked", "revoked and joined_unix_ms are set by the control plane, not written")
	}
	if n.GetNatsKey() != "" {
		return invalid("nats_key", "is set by the control plane from the node's join, not written")
	}
	if len(n.GetAddresses()) > maxList {
		return invalid("addresses", "holds more than %d addresses", maxList)
	}
	for i, a := range n.GetAddresses() {
		field := fmt.Sprintf("addresses[%d]", i)
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return invalid(field, "must be host:port")
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return invalid(field, "has no valid port")
		}
		if err := checkText(field, a); err != nil {
			return err
		}
	}
	if len(n.GetLabels()) > maxLabels {
		return invalid("labels", "holds more than %d labels", maxLabels)
	}
	for k, v := range n.GetLabels() {
		if len(k) > maxIDLen || !labelPattern.MatchString(k) {
			return invalid("labels."+k, "label names are letters, digits, '.', '_', '/' and '-', at most %d characters", maxIDLen)
		}
		if err := checkText("labels."+k, v); err != nil {
			return err
		}
	}
	return nil
}

func validateModel(m proto.Message) error {
	md := m.(*controlv1.Model)
	if err := checkModelID("id", md.GetId()); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"family", md.GetFamily()}, {"parameters", md.GetParameters()}, {"quantization", md.GetQuantization()},
		{"owned_by", md.GetOwnedBy()}, {"ollama", md.GetOllama()}, {"gguf", md.GetGguf()},
	} {
		if err := checkText(f.name, f.v); err != nil {
			return err
		}
	}
	if len(md.GetCapabilities()) > maxList {
		return invalid("capabilities", "holds more than %d entries", maxList)
	}
	for i, c := range md.GetCapabilities() {
		if !slices.Contains(table.Capabilities, c) {
			return invalid(fmt.Sprintf("capabilities[%d]", i), "unknown capability %q (known: %s)", c, strings.Join(table.Capabilities, ", "))
		}
		if slices.Index(md.GetCapabilities(), c) != i {
			return invalid(fmt.Sprintf("capabilities[%d]", i), "repeats %q", c)
		}
	}
	gguf, ollama := md.GetGguf(), md.GetOllama()
	switch {
	case md.GetLocal() && gguf == "" && ollama == "":
		return invalid("local", "a local model needs a source: gguf or ollama")
	case gguf != "" && ollama != "":
		return invalid("gguf", "give gguf or ollama, not both")
	case !md.GetLocal() && (gguf != "" || ollama != ""):
		field := "gguf"
		if ollama != "" {
			field = "ollama"
		}
		return invalid(field, "only a local model has a source; set local: true")
	}
	if gguf != "" {
		u, err := url.Parse(gguf)
		web := err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
		local := err == nil && u.Scheme == "file" && u.Host == "" && strings.HasPrefix(u.Path, "/")
		if !web && !local {
			return invalid("gguf", `must be an http(s) URL of a GGUF file, or "file:///path" on the edges`)
		}
	}
	return checkRegions(md.GetAllowedRegions())
}

func validatePlacement(m proto.Message) error {
	p := m.(*controlv1.Placement)
	if err := checkID("id", p.GetId()); err != nil {
		return err
	}
	if err := checkModelID("model", p.GetModel()); err != nil {
		return err
	}
	switch {
	case p.GetNode() == "" && p.GetRegion() == "":
		return invalid("node", "a placement names a node or a region")
	case p.GetNode() != "" && p.GetRegion() != "":
		return invalid("region", "a placement names a node or a region, not both")
	case p.GetNode() != "":
		if err := checkID("node", p.GetNode()); err != nil {
			return err
		}
	default:
		if err := checkID("region", p.GetRegion()); err != nil {
			return err
		}
	}
	if p.GetDesired() < 1 || p.GetDesired() > maxDesired {
		return invalid("desired", "must be between 1 and %d", maxDesired)
	}
	return nil
}

func validateProvider(m proto.Message) error {
	p := m.(*controlv1.Provider)
	if err := checkID("id", p.GetId()); err != nil {
		return err
	}
	// shared/table owns what presets, kinds and base URLs are valid, so
	// the compiler never meets a provider it would reject.
	t := table.Table{Providers: []table.Provider{{ID: p.GetId(), Preset: p.GetPreset(), Kind: p.GetKind(), BaseURL: p.GetBaseUrl(),
		Region: p.GetRegion(), APIVersion: p.GetApiVersion(), Project: p.GetProject(), CloudRegion: p.GetCloudRegion(), Auth: p.GetAuth()}}}
	if p.GetRegion() != "" {
		// Whether the region exists is the references' check; here it
		// only has to be there for the kinds that require one.
		t.Regions = []table.Region{{ID: p.GetRegion()}}
	}
	if err := t.Validate(); err != nil {
		var fe *table.FieldError
		if errors.As(err, &fe) {
			field := strings.TrimPrefix(fe.Field, "providers[0]")
			field = strings.TrimPrefix(field, ".")
			if field == "" {
				field = "base_url"
			}
			return invalid(field, "%s", fe.Msg)
		}
		return invalid("base_url", "%v", err)
	}
	if err := checkText("base_url", p.GetBaseUrl()); err != nil {
		return err
	}
	if p.GetRegion() != "" {
		if err := checkID("region", p.GetRegion()); err != nil {
			return err
		}
	}
	return checkSecretRef("secret_ref", p.GetSecretRef())
}

// checkSecretRef checks that ref is a reference, never a secret.
func checkSecretRef(field, ref string) error {
	switch {
	case ref == "":
	case strings.HasPrefix(ref, "env:") && envNamePattern.MatchString(ref[4:]):
	case strings.HasPrefix(ref, "file:/") && len(ref) <= maxTextLen && !strings.ContainsAny(ref, "\x00\n"):
	default:
		// Never echo the value: it may be the secret itself.
		return invalid(field, `must be a reference, "env:NAME" or "file:/path"; the secret itself is never stored`)
	}
	return nil
}

// maxWebhookAllow bounds a tenant's webhook allow-list.
const maxWebhookAllow = 64

// checkWebhookPolicy checks a tenant's webhook allow-list (host names,
// "*.domain" wildcards and CIDRs) and that it comes with a secret.
func checkWebhookPolicy(allow []string, ref string) error {
	if len(allow) > maxWebhookAllow {
		return invalid("webhook_allow", "holds at most %d entries", maxWebhookAllow)
	}
	for i, a := range allow {
		if !webhook.ValidEntry(a) {
			return invalid(fmt.Sprintf("webhook_allow[%d]", i), "must be a host name, *.domain or a CIDR such as 203.0.113.0/24, not %q", a)
		}
	}
	if len(allow) > 0 && ref == "" {
		return invalid("webhook_secret_ref", "is required when webhook_allow is set: every webhook call is signed")
	}
	return checkSecretRef("webhook_secret_ref", ref)
}

func validateTarget(field string, t *controlv1.Target) error {
	if t == nil {
		return invalid(field, "is empty")
	}
	if err := checkID(field+".provider", t.GetProvider()); err != nil {
		return err
	}
	if t.GetModel() != "" {
		if err := checkModelID(field+".model", t.GetModel()); err != nil {
			return err
		}
	}
	return nil
}

func validateRoute(m proto.Message) error {
	r := m.(*controlv1.Route)
	if err := checkModelID("model", r.GetModel()); err != nil {
		return err
	}
	if s := r.GetStrategy(); s != "" && !slices.Contains(Strategies, s) {
		return invalid("strategy", "unknown strategy %q (known: %s)", s, strings.Join(Strategies, ", "))
	}
	if len(r.GetTargets()) == 0 {
		return invalid("targets", "needs at least one target")
	}
	if len(r.GetTargets()) > maxList || len(r.GetFallbacks()) > maxList || len(r.GetAllowedRegions()) > maxList {
		return invalid("targets", "targets, fallbacks and allowed_regions hold at most %d entries each", maxList)
	}
	for i, t := range r.GetTargets() {
		if err := validateTarget(fmt.Sprintf("targets[%d]", i), t); err != nil {
			return err
		}
	}
	for i, t := range r.GetFallbacks() {
		if err := validateTarget(fmt.Sprintf("fallbacks[%d]", i), t); err != nil {
			return err
		}
	}
	if err := checkRegions(r.GetAllowedRegions()); err != nil {
		return err
	}
	if err := checkCache(r.GetCacheMode(), r.GetCacheTtlSeconds(), r.GetCacheSimilarity()); err != nil {
		return err
	}
	return checkFinite("max_price", r.GetMaxPrice(), 0, maxMoney)
}

// CacheModes are the values Route.cache_mode and Tenant.cache_mode may
// take; empty means "cache deterministic requests only".
var CacheModes = []string{"", "force", "off"}

// MaxCacheTTLSeconds bounds cache_ttl_seconds: 30 days.
const MaxCacheTTLSeconds = 30 * 24 * 3600

// checkCache validates a route's or a tenant's cache policy.
func checkCache(mode string, ttl uint32, similarity float64) error {
	if !slices.Contains(CacheModes, mode) {
		return invalid("cache_mode", `must be "force" or "off" (empty caches deterministic requests only)`)
	}
	if ttl > MaxCacheTTLSeconds {
		return invalid("cache_ttl_seconds", "must be at most %d (30 days)", MaxCacheTTLSeconds)
	}
	return checkFinite("cache_similarity", similarity, 0, 1)
}

func validateKey(m proto.Message) error {
	k := m.(*controlv1.Key)
	if err := checkID("id", k.GetId()); err != nil {
		return err
	}
	if !hashPattern.MatchString(k.GetHash()) {
		// Never echo the value: it may be a key rather than its hash.
		return invalid("hash", `must be "sha256:" followed by 64 lowercase hex digits; keys are stored only as hashes`)
	}
	if k.GetTenant() != "" {
		if err := checkID("tenant", k.GetTenant()); err != nil {
			return err
		}
	}
	if err := checkModels(k.GetAllowedModels()); err != nil {
		return err
	}
	if err := checkRegions(k.GetAllowedRegions()); err != nil {
		return err
	}
	if err := checkRate("rpm", k.GetRpm()); err != nil {
		return err
	}
	if err := checkRate("tpm", k.GetTpm()); err != nil {
		return err
	}
	if e := k.GetExpiresAt(); e != "" {
		if _, err := time.Parse(time.RFC3339, e); err != nil {
			return invalid("expires_at", "must be an RFC 3339 time such as 2027-01-31T00:00:00Z")
		}
	}
	return nil
}

// maxRate bounds rpm and tpm: far above any real limit, low enough that
// an edge's per-minute arithmetic never overflows.
const maxRate = 1_000_000_000

func checkRate(field string, v uint32) error {
	if v > maxRate {
		return invalid(field, "must be at most %d (0 means no limit)", maxRate)
	}
	return nil
}

// checkModels validates an allowed_models list: model IDs, no repeats.
func checkModels(models []string) error {
	if len(models) > maxList {
		return invalid("allowed_models", "holds at most %d entries", maxList)
	}
	for i, m := range models {
		field := fmt.Sprintf("allowed_models[%d]", i)
		if err := checkModelID(field, m); err != nil {
			return err
		}
		if slices.Index(models, m) != i {
			return invalid(field, "repeats %q", m)
		}
	}
	return nil
}

// BudgetPeriods are the values Tenant.budget_period may take; empty
// means "month".
var BudgetPeriods = []string{"", "month", "week", "day"}

func validateTenant(m proto.Message) error {
	t := m.(*controlv1.Tenant)
	if err := checkID("id", t.GetId()); err != nil {
		return err
	}
	if err := checkText("name", t.GetName()); err != nil {
		return err
	}
	if err := checkRegions(t.GetAllowedRegions()); err != nil {
		return err
	}
	if err := checkRate("rpm", t.GetRpm()); err != nil {
		return err
	}
	if err := checkRate("tpm", t.GetTpm()); err != nil {
		return err
	}
	if !slices.Contains(BudgetPeriods, t.GetBudgetPeriod()) {
		return invalid("budget_period", `must be "month", "week" or "day" (empty means "month")`)
	}
	if err := checkCache(t.GetCacheMode(), t.GetCacheTtlSeconds(), t.GetCacheSimilarity()); err != nil {
		return err
	}
	if err := checkWebhookPolicy(t.GetWebhookAllow(), t.GetWebhookSecretRef()); err != nil {
		return err
	}
	return checkFinite("monthly_budget", t.GetMonthlyBudget(), 0, maxMoney)
}

func validatePrice(m proto.Message) error {
	p := m.(*controlv1.Price)
	if err := checkModelID("model", p.GetModel()); err != nil {
		return err
	}
	if err := checkID("provider", p.GetProvider()); err != nil {
		return err
	}
	if err := checkFinite("input", p.GetInput(), 0, maxMoney); err != nil {
		return err
	}
	if err := checkFinite("cached", p.GetCached(), 0, maxMoney); err != nil {
		return err
	}
	if err := checkFinite("batch_input", p.GetBatchInput(), 0, maxMoney); err != nil {
		return err
	}
	if err := checkFinite("batch_output", p.GetBatchOutput(), 0, maxMoney); err != nil {
		return err
	}
	return checkFinite("output", p.GetOutput(), 0, maxMoney)
}

func regionRefs(regions []string) []ref {
	var out []ref
	for i, reg := range regions {
		out = append(out, ref{fmt.Sprintf("allowed_regions[%d]", i), KindRegion, reg})
	}
	return out
}

// checkRegions validates an allowed_regions list: IDs, no repeats.
func checkRegions(regions []string) error {
	if len(regions) > maxList {
		return invalid("allowed_regions", "holds at most %d entries", maxList)
	}
	for i, reg := range regions {
		field := fmt.Sprintf("allowed_regions[%d]", i)
		if err := checkID(field, reg); err != nil {
			return err
		}
		if slices.Index(regions, reg) != i {
			return invalid(field, "repeats %q", reg)
		}
	}
	return nil
}

func targetRefs(field string, ts []*controlv1.Target) []ref {
	var out []ref
	for i, t := range ts {
		out = append(out, ref{fmt.Sprintf("%s[%d].provider", field, i), KindProvider, t.GetProvider()})
	}
	return out
}

func init() {
	Kinds = []*Kind{
		{
			Name: KindRegion, Plural: "regions",
			New:      func() proto.Message { return &controlv1.Region{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Region).GetId() },
			validate: validateRegion,
			refs:     func(proto.Message) []ref { return nil },
			deps:     []string{KindNode, KindModel, KindProvider, KindPlacement, KindRoute, KindTenant, KindKey},
		},
		{
			Name: KindNode, Plural: "nodes",
			New:      func() proto.Message { return &controlv1.Node{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Node).GetId() },
			validate: validateNode,
			refs: func(m proto.Message) []ref {
				return []ref{{"region", KindRegion, m.(*controlv1.Node).GetRegion()}}
			},
			deps: []string{KindPlacement},
		},
		{
			Name: KindModel, Plural: "models",
			New:      func() proto.Message { return &controlv1.Model{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Model).GetId() },
			validate: validateModel,
			refs: func(m proto.Message) []ref {
				return regionRefs(m.(*controlv1.Model).GetAllowedRegions())
			},
			deps: []string{KindPlacement, KindRoute, KindPrice, KindKey},
		},
		{
			Name: KindProvider, Plural: "providers",
			New:      func() proto.Message { return &controlv1.Provider{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Provider).GetId() },
			validate: validateProvider,
			refs: func(m proto.Message) []ref {
				if r := m.(*controlv1.Provider).GetRegion(); r != "" {
					return []ref{{"region", KindRegion, r}}
				}
				return nil
			},
			deps: []string{KindRoute, KindPrice},
		},
		{
			Name: KindPlacement, Plural: "placements",
			New:      func() proto.Message { return &controlv1.Placement{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Placement).GetId() },
			validate: validatePlacement,
			refs: func(m proto.Message) []ref {
				p := m.(*controlv1.Placement)
				out := []ref{{"model", KindModel, p.GetModel()}}
				if p.GetNode() != "" {
					out = append(out, ref{"node", KindNode, p.GetNode()})
				}
				if p.GetRegion() != "" {
					out = append(out, ref{"region", KindRegion, p.GetRegion()})
				}
				return out
			},
		},
		{
			Name: KindRoute, Plural: "routes",
			New:      func() proto.Message { return &controlv1.Route{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Route).GetModel() },
			validate: validateRoute,
			refs: func(m proto.Message) []ref {
				r := m.(*controlv1.Route)
				out := []ref{{"model", KindModel, r.GetModel()}}
				out = append(out, targetRefs("targets", r.GetTargets())...)
				out = append(out, targetRefs("fallbacks", r.GetFallbacks())...)
				return append(out, regionRefs(r.GetAllowedRegions())...)
			},
		},
		{
			Name: KindTenant, Plural: "tenants",
			New:      func() proto.Message { return &controlv1.Tenant{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Tenant).GetId() },
			validate: validateTenant,
			refs: func(m proto.Message) []ref {
				return regionRefs(m.(*controlv1.Tenant).GetAllowedRegions())
			},
			deps: []string{KindKey},
		},
		{
			Name: KindKey, Plural: "keys",
			New:      func() proto.Message { return &controlv1.Key{} },
			ID:       func(m proto.Message) string { return m.(*controlv1.Key).GetId() },
			validate: validateKey,
			refs: func(m proto.Message) []ref {
				k := m.(*controlv1.Key)
				var out []ref
				if t := k.GetTenant(); t != "" {
					out = append(out, ref{"tenant", KindTenant, t})
				}
				for i, md := range k.GetAllowedModels() {
					out = append(out, ref{fmt.Sprintf("allowed_models[%d]", i), KindModel, md})
				}
				return append(out, regionRefs(k.GetAllowedRegions())...)
			},
		},
		{
			Name: KindPrice, Plural: "prices",
			New:      func() proto.Message { return &controlv1.Price{} },
			ID:       func(m proto.Message) string { return PriceID(m.(*controlv1.Price)) },
			validate: validatePrice,
			refs: func(m proto.Message) []ref {
				p := m.(*controlv1.Price)
				return []ref{{"model", KindModel, p.GetModel()}, {"provider", KindProvider, p.GetProvider()}}
			},
		},
	}
	for _, k := range Kinds {
		kindsByName[k.Name] = k
		kindsByName[k.Plural] = k
	}
}

// PriceID is a price's key, "provider/model". Provider IDs hold no '/',
// so the first '/' splits it.
func PriceID(p *controlv1.Price) string { return p.GetProvider() + "/" + p.GetModel() }

// Validate checks an entity on its own: required fields, formats and
// ranges. References to other entities are checked when the write is
// applied. It returns an *Error naming the field.
func Validate(m proto.Message) error {
	k, ok := KindOf(m)
	if !ok {
		return invalid("kind", "unknown entity type %T", m)
	}
	return k.validate(m)
}
