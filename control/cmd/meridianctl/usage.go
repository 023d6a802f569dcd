package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/fsm"
)

// limitFlags are the key and tenant limit flags, turned into field=value
// assignments so they edit an entity like `set` does. Empty means not
// given.
type limitFlags struct {
	tenant, models, regions string
	rpm, tpm                string
	expires                 string
	budget, period          string
	hardLimit               optBool
	groupBy, key, model     string
	from, to                string
}

// optBool is a boolean flag that remembers whether it was given.
type optBool struct{ set, v bool }

func (b *optBool) String() string   { return strconv.FormatBool(b.v) }
func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.set, b.v = true, v
	return nil
}

// limitAssigns returns the assignments the limit flags make for an
// entity of kind, or a usage error for a flag the kind does not have.
func (c *cli) limitAssigns(kind string, now time.Time) ([]string, error) {
	l := &c.limits
	var out []string
	add := func(field, v string) {
		if v != "" {
			out = append(out, field+"="+v)
		}
	}
	switch kind {
	case fsm.KindKey:
		if l.budget != "" || l.period != "" || l.hardLimit.set {
			return nil, fmt.Errorf("%w: --budget, --period and --hard-limit are tenant flags", errUsage)
		}
		add("tenant", l.tenant)
		add("allowed_models", l.models)
		add("allowed_regions", l.regions)
		if l.expires != "" {
			at, err := expiry(l.expires, now)
			if err != nil {
				return nil, err
			}
			add("expires_at", at)
		}
	case fsm.KindTenant:
		if l.tenant != "" || l.models != "" || l.regions != "" || l.expires != "" {
			return nil, fmt.Errorf("%w: --tenant, --models, --regions and --expires are key flags", errUsage)
		}
		add("monthly_budget", l.budget)
		add("budget_period", l.period)
		if l.hardLimit.set {
			add("hard_limit", strconv.FormatBool(l.hardLimit.v))
		}
	default:
		if l.tenant != "" || l.models != "" || l.regions != "" || l.expires != "" || l.rpm != "" || l.tpm != "" ||
			l.budget != "" || l.period != "" || l.hardLimit.set {
			return nil, fmt.Errorf("%w: limit flags apply to keys and tenants only", errUsage)
		}
		return nil, nil
	}
	add("rpm", l.rpm)
	add("tpm", l.tpm)
	return out, nil
}

// expiry reads --expires: an RFC 3339 time, or a duration from now such
// as 720h.
func expiry(s string, now time.Time) (string, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC().Format(time.RFC3339), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return "", fmt.Errorf("%w: --expires takes an RFC 3339 time (2027-01-31T00:00:00Z) or a duration (720h)", errUsage)
	}
	return now.Add(d).UTC().Truncate(time.Second).Format(time.RFC3339), nil
}

// setDisabled disables or enables an existing key.
func (c *cli) setDisabled(ctx context.Context, cl *client.Client, id string, disabled bool) error {
	m, err := cl.Get(ctx, fsm.KindKey, id, client.ReadOptions{Consistent: true})
	if err != nil {
		return err
	}
	k, _ := fsm.KindByName(fsm.KindKey)
	m, err = c.buildEntity(ctx, cl, k, id, []string{"disabled=" + strconv.FormatBool(disabled)})
	if err != nil {
		return err
	}
	idx, err := cl.Put(ctx, m, client.WriteOptions{})
	if err != nil {
		return err
	}
	verb := "enabled"
	if disabled {
		verb = "disabled"
	}
	return c.done(fmt.Sprintf("%s key %s", verb, id), idx)
}

// usage prints spend: meridianctl usage [--tenant T] [--key K]
// [--model M] [--from T] [--to T] [--group-by tenant,model,...].
func (c *cli) usage(ctx context.Context, rest []string) error {
	if len(rest) != 0 {
		return fmt.Errorf("%w: usage takes only flags", errUsage)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	l := &c.limits
	q := client.UsageQuery{Tenant: l.tenant, Key: l.key, Model: l.model, From: l.from, To: l.to}
	if l.groupBy != "" {
		q.GroupBy = strings.Split(l.groupBy, ",")
	}
	resp, err := cl.Usage(ctx, q, c.readOpts())
	if err != nil {
		return err
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	var cols []string
	for _, g := range q.GroupBy {
		cols = append(cols, strings.ToUpper(strings.TrimSpace(g)))
	}
	fmt.Fprintln(tw, strings.Join(append(cols, "REQUESTS", "TOKENS IN", "TOKENS OUT", "COST USD"), "\t"))
	for _, r := range resp.Rows {
		var vals []string
		for _, g := range q.GroupBy {
			v := map[string]string{"tenant": r.Tenant, "key": r.Key, "model": r.Model, "hour": r.Hour, "day": r.Day}[strings.TrimSpace(g)]
			vals = append(vals, dash(v))
		}
		vals = append(vals, strconv.FormatUint(r.Requests, 10), strconv.FormatUint(r.TokensIn, 10), strconv.FormatUint(r.TokensOut, 10), r.CostUSD)
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	if !resp.Through.IsZero() {
		fmt.Fprintf(tw, "(through %s)\n", resp.Through.Format(time.RFC3339))
	}
	return tw.Flush()
}
