package main

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/fsm"
)

// change is one line of a plan.
type change struct {
	Action string   `json:"action"` // "add", "change" or "delete"
	Kind   string   `json:"kind"`
	ID     string   `json:"id"`
	Fields []string `json:"fields,omitempty"`
	entity proto.Message
}

// plan is what apply would do.
type plan struct {
	Changes   []change `json:"changes"`
	Unchanged int      `json:"unchanged"`
	// Kept counts entities absent from the file, left alone without
	// --prune.
	Kept   int    `json:"kept"`
	DryRun bool   `json:"dry_run"`
	Index  uint64 `json:"index,omitempty"`
}

// readFleet parses a fleet file: one list per kind, keyed by the kind's
// plural ("regions:", "nodes:", ...).
func readFleet(raw []byte) (map[string][]proto.Message, error) {
	var doc map[string][]map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("fleet file: %w", err)
	}
	out := map[string][]proto.Message{}
	for section, items := range doc {
		k, ok := fsm.KindByName(section)
		if !ok || k.Plural != section {
			var known []string
			for _, k := range fsm.Kinds {
				known = append(known, k.Plural)
			}
			return nil, fmt.Errorf("fleet file: unknown section %q (known: %s)", section, strings.Join(known, ", "))
		}
		seen := map[string]bool{}
		for i, item := range items {
			b, err := json.Marshal(item)
			if err != nil {
				return nil, fmt.Errorf("fleet file: %s[%d]: %w", section, i, err)
			}
			m, err := api.DecodeEntity(k, b)
			if err != nil {
				if fe, ok := err.(*fsm.Error); ok {
					return nil, fmt.Errorf("fleet file: %s[%d].%s: %s", section, i, fe.Field, fe.Message)
				}
				return nil, fmt.Errorf("fleet file: %s[%d]: %w", section, i, err)
			}
			if seen[k.ID(m)] {
				return nil, fmt.Errorf("fleet file: %s[%d]: %s %q is listed twice", section, i, k.Name, k.ID(m))
			}
			seen[k.ID(m)] = true
			out[k.Name] = append(out[k.Name], m)
		}
	}
	return out, nil
}

// diffFields lists the fields whose values differ, with old and new
// values. It descends into objects and into lists of the same length, so
// a change reads "capacity.gpus: 2 → 4" or "targets[1].weight: 1 → 3"
// rather than as two whole objects.
func diffFields(old, new proto.Message) []string {
	var a, b any
	ob, _ := api.EncodeEntity(old)
	nb, _ := api.EncodeEntity(new)
	json.Unmarshal(ob, &a)
	json.Unmarshal(nb, &b)
	var out []string
	diffValue("", a, b, &out)
	return out
}

func diffValue(path string, a, b any, out *[]string) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := make([]string, 0, len(am)+len(bm))
		for k := range am {
			keys = append(keys, k)
		}
		for k := range bm {
			if _, ok := am[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			diffValue(p, am[k], bm[k], out)
		}
		return
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok && len(al) == len(bl) {
		for i := range al {
			diffValue(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		oj, _ := json.Marshal(a)
		nj, _ := json.Marshal(b)
		*out = append(*out, fmt.Sprintf("%s: %s → %s", path, oj, nj))
	}
}

func (c *cli) apply(ctx context.Context, rest []string) error {
	if len(rest) != 0 || c.file == "" {
		return fmt.Errorf("%w: apply takes -f FILE", errUsage)
	}
	raw, err := readFile(c.stdin, c.file)
	if err != nil {
		return err
	}
	want, err := readFleet(raw)
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	p := plan{DryRun: c.dryRun, Changes: []change{}}
	for _, k := range fsm.Kinds {
		cur, _, err := cl.List(ctx, k.Name, client.ReadOptions{Consistent: true})
		if err != nil {
			return err
		}
		have := map[string]proto.Message{}
		for _, m := range cur {
			have[k.ID(m)] = m
		}
		for _, m := range want[k.Name] {
			old, ok := have[k.ID(m)]
			switch {
			case !ok:
				p.Changes = append(p.Changes, change{Action: "add", Kind: k.Name, ID: k.ID(m), entity: m})
			case !proto.Equal(old, m):
				p.Changes = append(p.Changes, change{Action: "change", Kind: k.Name, ID: k.ID(m), Fields: diffFields(old, m), entity: m})
			default:
				p.Unchanged++
			}
			delete(have, k.ID(m))
		}
		var gone []string
		for id := range have {
			gone = append(gone, id)
		}
		sort.Strings(gone)
		for _, id := range gone {
			if c.prune {
				p.Changes = append(p.Changes, change{Action: "delete", Kind: k.Name, ID: id})
			} else {
				p.Kept++
			}
		}
	}
	if len(p.Changes) > 0 && !c.dryRun {
		var puts []proto.Message
		var dels []client.Ref
		for _, ch := range p.Changes {
			if ch.Action == "delete" {
				dels = append(dels, client.Ref{Kind: ch.Kind, ID: ch.ID})
			} else {
				puts = append(puts, ch.entity)
			}
		}
		// One batch: the fleet changes all at once or not at all.
		if p.Index, err = cl.Batch(ctx, puts, dels, client.WriteOptions{}); err != nil {
			c.printPlan(p)
			return fmt.Errorf("apply: %w", err)
		}
	}
	return c.printPlan(p)
}

func (c *cli) printPlan(p plan) error {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	var add, chg, del int
	for _, ch := range p.Changes {
		switch ch.Action {
		case "add":
			add++
			fmt.Fprintf(c.stdout, "+ %s %s\n", ch.Kind, ch.ID)
		case "change":
			chg++
			fmt.Fprintf(c.stdout, "~ %s %s\n", ch.Kind, ch.ID)
			for _, f := range ch.Fields {
				fmt.Fprintf(c.stdout, "    %s\n", f)
			}
		case "delete":
			del++
			fmt.Fprintf(c.stdout, "- %s %s\n", ch.Kind, ch.ID)
		}
	}
	summary := fmt.Sprintf("%d to add, %d to change, %d to delete, %d unchanged", add, chg, del, p.Unchanged)
	if p.Kept > 0 {
		summary += fmt.Sprintf(", %d not in the file kept (--prune deletes them)", p.Kept)
	}
	switch {
	case len(p.Changes) == 0:
		fmt.Fprintf(c.stdout, "No changes: %s.\n", summary)
	case p.DryRun:
		fmt.Fprintf(c.stdout, "Plan: %s. Dry run: nothing applied.\n", summary)
	case p.Index > 0:
		fmt.Fprintf(c.stdout, "Applied: %s (index %d).\n", summary, p.Index)
	default:
		fmt.Fprintf(c.stdout, "Plan: %s.\n", summary)
	}
	return nil
}
