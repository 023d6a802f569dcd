package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Identity is who a request is for: the key the client authenticated
// with and its tenant, both from the request's one table snapshot. The
// zero Identity is a client without a key (auth mode "none").
type Identity struct {
	// KeyID and TenantID name the key and its tenant; TenantID may be
	// set while Tenant is nil when the key names a tenant the table does
	// not list.
	KeyID, TenantID string
	Key             *table.Key
	Tenant          *table.Tenant
}

type keyHashKey struct{}

// WithKeyHash returns a context whose requests authenticate as the
// table's key with this hash (table.Key.Hash, "sha256:<hex>"), whatever
// headers they carry: edge/jobs runs a batch's lines as the key that
// created the batch, which it knows only by hash. Only code in the edge
// process can set it; no client input reaches it. A key disabled or
// deleted since is refused as usual.
func WithKeyHash(ctx context.Context, hash string) context.Context {
	return context.WithValue(ctx, keyHashKey{}, strings.ToLower(strings.TrimPrefix(hash, "sha256:")))
}

type batchKey struct{}

// WithBatch marks ctx's request as batch work (a batch line or an async
// request, run by edge/jobs): its usage is priced at the table's batch
// price (table.Price.ForBatch). Only code in the edge process sets it.
func WithBatch(ctx context.Context) context.Context { return context.WithValue(ctx, batchKey{}, true) }

// IsBatch reports whether ctx's request is batch work (WithBatch).
func IsBatch(ctx context.Context) bool { v, _ := ctx.Value(batchKey{}).(bool); return v }

// usable reports whether k may be used at now: neither disabled nor
// expired. Unusable keys are answered exactly like unknown ones.
func usable(k *table.Key, c *Config) bool {
	return !k.Disabled && (k.ExpiresAt.IsZero() || c.now().Before(k.ExpiresAt))
}

// ErrModelNotAllowed is the answer for a model the key may not call:
// 403 permission_error, code "model_not_allowed". We depart from OpenAI
// here, which answers 404 model_not_found: a key's owner is better
// served by being told the model exists but is not theirs to call, and
// the model list is no secret (GET /v1/models).
func ErrModelNotAllowed(keyID, model string) *llm.Error {
	return &llm.Error{Status: http.StatusForbidden, Type: llm.TypePermission, Code: "model_not_allowed", Param: "model",
		Message: fmt.Sprintf("The API key %q may not use the model %q; ask your Meridian administrator to add it to the key's allowed models.", keyID, model)}
}

// allowsModel reports whether the identity's key may call model.
// AllowsModel reports whether the identity's key may call model.
func (id *Identity) AllowsModel(model string) bool { return id.allowsModel(model) }

func (id *Identity) allowsModel(model string) bool {
	return id.Key == nil || len(id.Key.AllowedModels) == 0 || slices.Contains(id.Key.AllowedModels, model)
}

// exhausted reports whether the identity's tenant has spent its budget
// under a hard limit, as the control plane says in the table.
func (id *Identity) exhausted(now time.Time) bool {
	tn := id.Tenant
	return tn != nil && tn.Exhausted && (tn.ExhaustedUntil.IsZero() || now.Before(tn.ExhaustedUntil))
}

// ErrInsufficientQuota is the answer for a tenant whose budget is spent:
// 429 with OpenAI's code for exhausted quota, insufficient_quota.
func ErrInsufficientQuota(tn *table.Tenant) *llm.Error {
	until := "the end of its budget period"
	if !tn.ExhaustedUntil.IsZero() {
		until = tn.ExhaustedUntil.UTC().Format(time.RFC3339)
	}
	return &llm.Error{Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: "insufficient_quota",
		Message: fmt.Sprintf("You exceeded your current quota: tenant %q has spent its budget of $%.2f for this period, and its requests are refused until %s.", tn.ID, tn.Budget, until)}
}

// checks fills buf with the limits the identity's request counts
// against: its key's and its tenant's, where set.
func (id *Identity) checks(buf *[2]limits.Check) []limits.Check {
	cs := buf[:0]
	if k := id.Key; k != nil && (k.RPM > 0 || k.TPM > 0) {
		cs = append(cs, limits.Check{Subject: limits.Subject{Kind: limits.KindKey, ID: k.ID}, RPM: k.RPM, TPM: k.TPM})
	}
	if tn := id.Tenant; tn != nil && (tn.RPM > 0 || tn.TPM > 0) {
		cs = append(cs, limits.Check{Subject: limits.Subject{Kind: limits.KindTenant, ID: tn.ID}, RPM: tn.RPM, TPM: tn.TPM})
	}
	return cs
}

// ErrRateLimited is the answer for a request over a limit.
func ErrRateLimited(v *limits.Verdict) *llm.Error {
	what, unit, lim := "requests per min (RPM)", "requests", v.Requests.Limit
	if v.Tokens {
		what, unit, lim = "tokens per min (TPM)", "tokens", v.TokenState.Limit
	}
	kind := "API key"
	if v.Refused.Kind == limits.KindTenant {
		kind = "tenant"
	}
	retry := max(v.RetryAfter, time.Second)
	return &llm.Error{Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: "rate_limit_exceeded", RetryAfter: retry,
		Message: fmt.Sprintf("Rate limit reached for %s %q on %s: limit %d %s per minute across the fleet. Please try again in %v.",
			kind, v.Refused.ID, what, lim, unit, retry.Round(time.Second))}
}

// Access is the dry run's account of what a key may do now: its limits
// and their use, its tenant's budget, and why a request would be
// refused before routing.
type Access struct {
	Key    string `json:"key"`
	Tenant string `json:"tenant,omitempty"`
	// Refused says why a request with this key would be refused before
	// routing ("key disabled", "budget exhausted", …); empty when it
	// would be routed.
	Refused string        `json:"refused,omitempty"`
	Code    string        `json:"code,omitempty"`
	Limits  []LimitStatus `json:"limits"`
	Budget  *BudgetStatus `json:"budget,omitempty"`
}

// LimitStatus is one limit and its fleet-wide use as this edge sees it.
type LimitStatus struct {
	Subject      string `json:"subject"`
	RPM          int64  `json:"rpm,omitempty"`
	TPM          int64  `json:"tpm,omitempty"`
	UsedRequests int64  `json:"used_requests"`
	UsedTokens   int64  `json:"used_tokens"`
	Exceeded     bool   `json:"exceeded"`
}

// BudgetStatus is a tenant's budget as the table says.
type BudgetStatus struct {
	Budget         float64 `json:"budget_usd"`
	Period         string  `json:"period,omitempty"`
	HardLimit      bool    `json:"hard_limit"`
	Exhausted      bool    `json:"exhausted"`
	ExhaustedUntil string  `json:"exhausted_until,omitempty"`
}

// Access explains key keyID for a request for model at now, from tab;
// nil when the table lists no such key.
func (c *Config) Access(tab *table.Compiled, keyID, model string, now time.Time) *Access {
	i := slices.IndexFunc(tab.Table().Keys, func(k *table.Key) bool { return k.ID == keyID })
	if i < 0 {
		return nil
	}
	k := tab.Table().Keys[i]
	id := Identity{KeyID: k.ID, TenantID: k.Tenant, Key: k}
	if tn, ok := tab.Tenant(k.Tenant); ok {
		id.Tenant = tn
	}
	a := &Access{Key: k.ID, Tenant: k.Tenant, Limits: []LimitStatus{}}
	var buf [2]limits.Check
	for _, ch := range id.checks(&buf) {
		ls := LimitStatus{Subject: ch.Subject.String(), RPM: ch.RPM, TPM: ch.TPM}
		if c.Limits != nil {
			ls.UsedRequests, ls.UsedTokens = c.Limits.Used(now, ch.Subject)
		}
		ls.Exceeded = (ch.RPM > 0 && ls.UsedRequests >= ch.RPM) || (ch.TPM > 0 && ls.UsedTokens >= ch.TPM)
		a.Limits = append(a.Limits, ls)
	}
	if tn := id.Tenant; tn != nil && (tn.Budget > 0 || tn.Exhausted) {
		a.Budget = &BudgetStatus{Budget: tn.Budget, Period: tn.BudgetPeriod, HardLimit: tn.HardLimit, Exhausted: id.exhausted(now)}
		if a.Budget.Exhausted && !tn.ExhaustedUntil.IsZero() {
			a.Budget.ExhaustedUntil = tn.ExhaustedUntil.UTC().Format(time.RFC3339)
		}
	}
	switch {
	case k.Disabled:
		a.Refused, a.Code = "the key is disabled: requests with it get 401 invalid_api_key", "invalid_api_key"
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		a.Refused, a.Code = "the key expired at "+k.ExpiresAt.UTC().Format(time.RFC3339)+": requests with it get 401 invalid_api_key", "invalid_api_key"
	case model != "" && !id.allowsModel(model):
		a.Refused, a.Code = fmt.Sprintf("the key may not use the model %q: requests get 403 model_not_allowed", model), "model_not_allowed"
	case id.exhausted(now):
		a.Refused, a.Code = fmt.Sprintf("tenant %q has spent its budget for this period: requests get 429 insufficient_quota", id.TenantID), "insufficient_quota"
	default:
		for _, ls := range a.Limits {
			if ls.Exceeded {
				a.Refused, a.Code = ls.Subject+" is at its limit: requests get 429 rate_limit_exceeded", "rate_limit_exceeded"
				break
			}
		}
	}
	return a
}
