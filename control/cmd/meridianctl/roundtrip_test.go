package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"pgregory.net/rapid"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

// fleet is a generated fleet: every kind's entities, in the order
// generated.
type fleet map[string][]proto.Message

// GoString shows a drawn fleet, in rapid's failure reports, as the
// fleet file it becomes.
func (f fleet) GoString() string {
	var fail failer
	b := fleetYAML(&fail, f, false)
	if fail != "" {
		return string(fail)
	}
	return "\n" + string(b)
}

type failer string

func (f *failer) Fatalf(format string, args ...any) { *f = failer(fmt.Sprintf(format, args...)) }

func (f fleet) size() int {
	n := 0
	for _, ms := range f {
		n += len(ms)
	}
	return n
}

// Generators for the values each field accepts. They cover the valid
// domain on purpose, including strings YAML would read as something
// else ("yes", "null", "1e3") and non-ASCII text.
var (
	idGen      = rapid.StringMatching(`[A-Za-z0-9][A-Za-z0-9._-]{0,12}`)
	modelIDGen = rapid.StringMatching(`[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,16}`)
	trickyText = []string{"yes", "no", "on", "off", "null", "~", "true", "1e3", "0x1F", "012", ".5", "- item",
		"a: b", "#hash", "'single'", `"double"`, " lead", "trail ", "[x]", "{y}", "*star", "&anchor", "!tag", "%", "@at",
		"`tick`", "|", ">", "Europe West (Dublin)", "é日本 ü", "a,b", "k=v", "1:2"}
	textGen = rapid.OneOf(
		rapid.SampledFrom(trickyText),
		rapid.StringOfN(rapid.RuneFrom(nil, unicode.L, unicode.N, unicode.P, unicode.S, unicode.Zs), 0, 24, 200),
	)
	// listText is text a "set" list or map value can hold: no commas.
	listText = textGen.Filter(func(s string) bool { return !strings.Contains(s, ",") })
	urlGen   = rapid.StringMatching(`(http|https)://[a-z][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,2}(:[1-9][0-9]{0,4})?(/[A-Za-z0-9._~-]{1,8}){0,3}/?`)
	hostGen  = rapid.OneOf(
		rapid.StringMatching(`10\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}`),
		rapid.StringMatching(`[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}`),
		rapid.Just("[::1]"),
	)
	rateGen  = rapid.OneOf(rapid.Uint32Range(0, 1_000_000_000), rapid.SampledFrom([]uint32{0, 1, 60, 1_000_000_000}))
	moneyGen = rapid.OneOf(rapid.Float64Range(0, 1e9), rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 0.05, 0.15, 3, 15, 1e9}))
	// coordGen draws degrees within ±limit, -0 among them.
	coordGen = func(limit float64) *rapid.Generator[float64] {
		return rapid.OneOf(rapid.Float64Range(-limit, limit), rapid.SampledFrom([]float64{0, math.Copysign(0, -1), -limit, limit}))
	}
)

func pick[E any](t *rapid.T, label string, from []E) E {
	return rapid.SampledFrom(from).Draw(t, label)
}

// subset draws distinct elements of from, in a drawn order.
func subset[E comparable](t *rapid.T, label string, from []E, max int) []E {
	if len(from) == 0 {
		return nil
	}
	return rapid.SliceOfNDistinct(rapid.SampledFrom(from), 0, min(max, len(from)), rapid.ID[E]).Draw(t, label)
}

func ids(t *rapid.T, label string, gen *rapid.Generator[string], max int) []string {
	return rapid.SliceOfNDistinct(gen, 0, max, rapid.ID[string]).Draw(t, label)
}

// dedupe returns the distinct strings of s, sorted.
func dedupe(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// providerForms are the ways README documents to write a provider.
var providerForms = []string{"preset", "preset+base_url", "preset+kind", "kind+base_url", "kind local", "azure", "cloud"}

// plainPresets are the presets that need no cloud fields.
var plainPresets = slices.DeleteFunc(table.PresetNames(), func(n string) bool {
	k := table.Presets[n].Kind
	return k == table.KindBedrock || k == table.KindVertex
})

// cacheGen draws a route's or a tenant's cache policy fields.
func cacheGen(t *rapid.T) (mode string, ttl uint32, similarity float64) {
	return pick(t, "cache_mode", fsm.CacheModes),
		rapid.OneOf(rapid.Uint32Range(0, fsm.MaxCacheTTLSeconds), rapid.SampledFrom([]uint32{0, 1, fsm.MaxCacheTTLSeconds})).Draw(t, "cache_ttl_seconds"),
		rapid.OneOf(rapid.Float64Range(0, 1), rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 0.92, 1})).Draw(t, "cache_similarity")
}

// genFleet draws a valid fleet: every entity passes validation and every
// reference resolves.
var genFleet = rapid.Custom(func(t *rapid.T) fleet {
	f := fleet{}
	var regions, nodes, localModels, models, providers, tenants []string
	// served are the regions that hold a node or a provider: the only
	// ones an allowed_regions list may name and still route.
	var served, nodeRegions []string
	providerRegion := map[string]string{}
	localProvider, placed := map[string]bool{}, map[string]bool{}
	for _, id := range ids(t, "regions", idGen, 3) {
		f[fsm.KindRegion] = append(f[fsm.KindRegion], &controlv1.Region{Id: id, Name: textGen.Draw(t, "name"),
			Latitude: coordGen(90).Draw(t, "lat"), Longitude: coordGen(180).Draw(t, "lon")})
		regions = append(regions, id)
	}
	if len(regions) > 0 {
		for _, id := range ids(t, "nodes", idGen, 3) {
			n := &controlv1.Node{Id: id, Region: pick(t, "region", regions)}
			for range rapid.IntRange(0, 3).Draw(t, "addresses") {
				n.Addresses = append(n.Addresses, hostGen.Draw(t, "host")+":"+strconv.Itoa(rapid.IntRange(1, 65535).Draw(t, "port")))
			}
			if rapid.Bool().Draw(t, "has capacity") {
				n.Capacity = &controlv1.Capacity{Gpus: rapid.Uint32Range(0, 16).Draw(t, "gpus"), GpuMemoryMib: rapid.Uint32().Draw(t, "gpu_mem"),
					MemoryMib: rapid.Uint32().Draw(t, "mem"), MaxConcurrent: rapid.Uint32().Draw(t, "max_concurrent")}
			}
			n.Labels = rapid.MapOfN(rapid.StringMatching(`[A-Za-z0-9]([A-Za-z0-9._/-]{0,8}[A-Za-z0-9])?`), listText, 0, 3).Draw(t, "labels")
			if len(n.Labels) == 0 {
				n.Labels = nil
			}
			f[fsm.KindNode] = append(f[fsm.KindNode], n)
			nodes = append(nodes, id)
			served = append(served, n.Region)
			nodeRegions = append(nodeRegions, n.Region)
		}
	}
	var modelsDrawn []*controlv1.Model
	for _, id := range ids(t, "models", modelIDGen, 4) {
		m := &controlv1.Model{Id: id, Family: textGen.Draw(t, "family"), Parameters: textGen.Draw(t, "parameters"),
			Quantization: textGen.Draw(t, "quantization"), ContextLength: rapid.Uint32().Draw(t, "context_length"),
			Capabilities: subset(t, "capabilities", []string{table.CapVision, table.CapTools}, 2),
			OwnedBy:      textGen.Draw(t, "owned_by")}
		switch rapid.IntRange(0, 2).Draw(t, "source") {
		case 1:
			m.Local, m.Gguf = true, urlGen.Draw(t, "gguf")
		case 2:
			m.Local, m.Ollama = true, textGen.Filter(func(s string) bool { return s != "" }).Draw(t, "ollama")
		}
		if m.Local {
			localModels = append(localModels, id)
		}
		modelsDrawn = append(modelsDrawn, m)
		f[fsm.KindModel] = append(f[fsm.KindModel], m)
		models = append(models, id)
	}
	for _, id := range ids(t, "providers", idGen, 4) {
		p := &controlv1.Provider{Id: id}
		switch pick(t, "form", providerForms) {
		case "preset":
			p.Preset = pick(t, "preset", slices.DeleteFunc(table.PresetNames(), func(n string) bool { return table.Presets[n].BaseURL == "" }))
		case "preset+base_url":
			p.Preset, p.BaseUrl = pick(t, "preset", plainPresets), urlGen.Draw(t, "base_url")
		case "preset+kind":
			p.Preset = pick(t, "preset", plainPresets)
			p.Kind, p.BaseUrl = table.Presets[p.Preset].Kind, urlGen.Draw(t, "base_url")
		case "kind+base_url":
			p.Kind = pick(t, "kind", []string{table.KindOpenAI, table.KindAnthropic, table.KindGemini, table.KindOllama})
			p.BaseUrl = urlGen.Draw(t, "base_url")
		case "kind local":
			p.Kind = table.KindLocal
		case "azure":
			p.Preset, p.BaseUrl = "azure", urlGen.Draw(t, "base_url")
			p.ApiVersion = pick(t, "api_version", []string{"", "2024-10-21", "2025-04-01-preview"})
			p.Auth = pick(t, "auth", []string{"", table.AuthAPIKey, table.AuthEntra})
		case "cloud":
			if len(regions) == 0 {
				p.Kind = table.KindLocal // a cloud provider needs a region
				break
			}
			p.Preset = pick(t, "cloud preset", []string{"bedrock", "vertex"})
			if rapid.Bool().Draw(t, "cloud base_url") {
				p.BaseUrl = urlGen.Draw(t, "base_url")
			}
			p.CloudRegion = pick(t, "cloud_region", []string{"us-east-1", "europe-west4"}) // region IDs drawn here are not all cloud names
			if p.Preset == "vertex" {
				p.Project = rapid.StringMatching(`[a-z][a-z0-9-]{5,20}`).Draw(t, "project")
			}
			p.Region = pick(t, "region", regions)
		}
		p.SecretRef = rapid.OneOf(rapid.Just(""), rapid.StringMatching(`env:MERIDIAN_SECRET_[A-Za-z0-9_]{1,15}`),
			rapid.StringMatching(`file:/etc/meridian/secrets/[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,2}`)).Draw(t, "secret_ref")
		if p.Kind == table.KindLocal {
			localProvider[id] = true
		}
		if p.Region != "" {
			providerRegion[id] = p.Region
			served = append(served, p.Region)
		} else if len(regions) > 0 && rapid.Bool().Draw(t, "has region") {
			p.Region = pick(t, "region", regions)
			providerRegion[id] = p.Region
			served = append(served, p.Region)
		}
		f[fsm.KindProvider] = append(f[fsm.KindProvider], p)
		providers = append(providers, id)
	}
	// Models may be restricted to regions that something serves; the
	// provider loop above has filled served.
	for _, m := range modelsDrawn {
		m.AllowedRegions = subset(t, "model allowed_regions", dedupe(served), 2)
	}
	if len(localModels) > 0 && len(nodes) > 0 {
		for _, id := range ids(t, "placements", idGen, 3) {
			p := &controlv1.Placement{Id: id, Model: pick(t, "model", localModels), Desired: uint32(rapid.IntRange(1, 10000).Draw(t, "desired"))}
			// A region placement needs a node in its region.
			if rapid.Bool().Draw(t, "on a node") {
				p.Node = pick(t, "node", nodes)
			} else {
				p.Region = pick(t, "region", dedupe(nodeRegions))
			}
			placed[p.Model] = true
			f[fsm.KindPlacement] = append(f[fsm.KindPlacement], p)
		}
	}
	target := rapid.Custom(func(t *rapid.T) *controlv1.Target {
		tg := &controlv1.Target{Provider: pick(t, "provider", providers)}
		if rapid.Bool().Draw(t, "target model") {
			tg.Model = modelIDGen.Draw(t, "model")
		}
		if rapid.Bool().Draw(t, "weighted") {
			tg.Weight = rapid.Uint32().Draw(t, "weight")
		}
		return tg
	})
	if len(providers) > 0 {
		for _, model := range subset(t, "routes", models, 4) {
			r := &controlv1.Route{Model: model, Strategy: pick(t, "strategy", append([]string{""}, fsm.Strategies...)),
				Targets:   rapid.SliceOfN(target, 1, 3).Draw(t, "targets"),
				Fallbacks: rapid.SliceOfN(target, 0, 2).Draw(t, "fallbacks"),
				MaxPrice:  moneyGen.Draw(t, "max_price")}
			r.CacheMode, r.CacheTtlSeconds, r.CacheSimilarity = cacheGen(t)
			// A route may only be restricted to regions its own
			// providers serve in, or it could never route.
			var own []string
			for _, tg := range append(slices.Clone(r.Targets), r.Fallbacks...) {
				if reg := providerRegion[tg.Provider]; reg != "" {
					own = append(own, reg)
				}
			}
			r.AllowedRegions = subset(t, "allowed_regions", dedupe(own), 3)
			// The local engine serves a target's own model name when it
			// sets one, as the validation reads it.
			if !slices.ContainsFunc(append(slices.Clone(r.Targets), r.Fallbacks...), func(tg *controlv1.Target) bool {
				m := tg.Model
				if m == "" {
					m = model
				}
				return !localProvider[tg.Provider] || placed[m]
			}) {
				continue // only the local engine, and placed nowhere: it could never route
			}
			if len(r.Fallbacks) == 0 {
				r.Fallbacks = nil
			}
			f[fsm.KindRoute] = append(f[fsm.KindRoute], r)
		}
	}
	for _, id := range ids(t, "tenants", idGen, 3) {
		tn := &controlv1.Tenant{Id: id, Name: textGen.Draw(t, "name"),
			MonthlyBudget: moneyGen.Draw(t, "monthly_budget"), HardLimit: rapid.Bool().Draw(t, "hard_limit"),
			AllowedRegions: subset(t, "tenant allowed_regions", dedupe(served), 2),
			Rpm:            rateGen.Draw(t, "tenant rpm"), Tpm: rateGen.Draw(t, "tenant tpm"),
			BudgetPeriod: rapid.SampledFrom(fsm.BudgetPeriods).Draw(t, "budget_period")}
		tn.CacheMode, tn.CacheTtlSeconds, tn.CacheSimilarity = cacheGen(t)
		if rapid.Bool().Draw(t, "webhooks") {
			tn.WebhookAllow = rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"hooks.example.com", "*.example.org", "203.0.113.0/24", "127.0.0.1/32", "fd00::/8"}),
				1, 3, rapid.ID[string]).Draw(t, "webhook_allow")
			tn.WebhookSecretRef = "env:MERIDIAN_SECRET_WEBHOOK"
		}
		f[fsm.KindTenant] = append(f[fsm.KindTenant], tn)
		tenants = append(tenants, id)
	}
	hashes := ids(t, "hashes", rapid.StringMatching(`[0-9a-f]{64}`), 3)
	for i, id := range ids(t, "keys", idGen, len(hashes)) {
		k := &controlv1.Key{Id: id, Hash: "sha256:" + hashes[i],
			AllowedModels: subset(t, "key allowed_models", models, 3), AllowedRegions: subset(t, "key allowed_regions", dedupe(served), 2),
			Rpm: rateGen.Draw(t, "key rpm"), Tpm: rateGen.Draw(t, "key tpm"), Disabled: rapid.Bool().Draw(t, "disabled")}
		if rapid.Bool().Draw(t, "expires") {
			k.ExpiresAt = time.Unix(rapid.Int64Range(0, 1<<35).Draw(t, "expires_at"), 0).UTC().Format(time.RFC3339)
		}
		if len(tenants) > 0 && rapid.Bool().Draw(t, "has tenant") {
			k.Tenant = pick(t, "tenant", tenants)
		}
		f[fsm.KindKey] = append(f[fsm.KindKey], k)
	}
	if len(providers) > 0 && len(models) > 0 {
		type pair struct{ provider, model string }
		var pairs []pair
		for _, p := range providers {
			for _, m := range models {
				pairs = append(pairs, pair{p, m})
			}
		}
		for _, pr := range subset(t, "prices", pairs, 4) {
			f[fsm.KindPrice] = append(f[fsm.KindPrice], &controlv1.Price{Provider: pr.provider, Model: pr.model,
				Input: moneyGen.Draw(t, "input"), Output: moneyGen.Draw(t, "output"), Cached: moneyGen.Draw(t, "cached"),
				BatchInput: moneyGen.Draw(t, "batch_input"), BatchOutput: moneyGen.Draw(t, "batch_output")})
		}
	}
	for _, ms := range f {
		for _, m := range ms {
			if err := fsm.Validate(m); err != nil {
				t.Fatalf("the generator made an invalid %T %v: %v", m, m, err)
			}
		}
	}
	return f
})

// fleetYAML writes f as a fleet file, as an operator would: only the
// fields set, or, with unpopulated, every field with nulls and zeros.
func fleetYAML(t interface{ Fatalf(string, ...any) }, f fleet, unpopulated bool) []byte {
	doc := map[string][]any{}
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: unpopulated}
	for _, k := range fsm.Kinds {
		for _, m := range f[k.Name] {
			b, err := opts.Marshal(m)
			if err != nil {
				t.Fatalf("encode %v: %v", m, err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			doc[k.Plural] = append(doc[k.Plural], v)
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return out
}

// setArgs returns the "KIND set ID field=value ..." arguments that write
// m, built from the message's descriptor so that every field is covered,
// including fields added later.
func setArgs(k *fsm.Kind, m proto.Message) []string {
	args := []string{k.Name, "set", k.ID(m)}
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !r.Has(fd) {
			continue
		}
		name, v := string(fd.Name()), r.Get(fd)
		switch {
		case fd.IsMap():
			var kv []string
			v.Map().Range(func(mk protoreflect.MapKey, mv protoreflect.Value) bool {
				kv = append(kv, mk.String()+":"+mv.String())
				return true
			})
			sort.Strings(kv)
			args = append(args, name+"="+strings.Join(kv, ","))
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			var items []string
			for j := 0; j < v.List().Len(); j++ {
				tg := v.List().Get(j).Message().Interface().(*controlv1.Target)
				s := tg.GetProvider()
				if tg.GetModel() != "" {
					s += ":" + tg.GetModel()
				}
				if tg.GetWeight() != 0 {
					s += "=" + strconv.FormatUint(uint64(tg.GetWeight()), 10)
				}
				items = append(items, s)
			}
			args = append(args, name+"="+strings.Join(items, ","))
		case fd.IsList():
			var items []string
			for j := 0; j < v.List().Len(); j++ {
				items = append(items, scalarString(fd, v.List().Get(j)))
			}
			args = append(args, name+"="+strings.Join(items, ","))
		case fd.Kind() == protoreflect.MessageKind:
			sub := v.Message()
			sf := sub.Descriptor().Fields()
			for j := 0; j < sf.Len(); j++ {
				args = append(args, name+"."+string(sf.Get(j).Name())+"="+scalarString(sf.Get(j), sub.Get(sf.Get(j))))
			}
		default:
			args = append(args, name+"="+scalarString(fd, v))
		}
	}
	return args
}

func scalarString(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.DoubleKind:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool())
	case protoreflect.Uint32Kind:
		return strconv.FormatUint(v.Uint(), 10)
	}
	return v.String()
}

// canonicalEntity is m as it reads back: a -0 is 0 (unset in proto3),
// however it was written. A fleet file cannot even say -0: YAML reads it
// as the integer 0; and the control plane reads -0 back as 0
// (TestFleetFiles checks both).
func canonicalEntity(m proto.Message) proto.Message {
	m = proto.Clone(m)
	var walk func(r protoreflect.Message)
	walk = func(r protoreflect.Message) {
		fields := r.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			switch {
			case !r.Has(fd) || fd.IsMap():
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for j := 0; j < r.Get(fd).List().Len(); j++ {
					walk(r.Get(fd).List().Get(j).Message())
				}
			case fd.IsList():
			case fd.Kind() == protoreflect.MessageKind:
				walk(r.Get(fd).Message())
			case fd.Kind() == protoreflect.DoubleKind && r.Get(fd).Float() == 0:
				r.Clear(fd)
			}
		}
	}
	walk(m.ProtoReflect())
	return m
}

// cliTB is what a CLI check needs of a test: *testing.T or *rapid.T.
type cliTB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkFleet checks that the control plane holds exactly f: every kind
// read back with "ls -json" and every entity with "get -json" is
// identical to f's, and "apply --dry-run" of the fleet file shows no
// difference.
func checkFleet(t cliTB, cli ctl, f fleet, file, how string) {
	t.Helper()
	for _, k := range fsm.Kinds {
		var listed []json.RawMessage
		out := cli.ok(k.Name, "ls", "-json")
		if err := json.Unmarshal([]byte(out), &listed); err != nil {
			t.Fatalf("%s: %s ls -json is not a JSON array: %v\n%s", how, k.Name, err, out)
		}
		var got, want []string
		for _, raw := range listed {
			m := k.New()
			if err := protojson.Unmarshal(raw, m); err != nil {
				t.Fatalf("%s: %s ls -json: %v", how, k.Name, err)
			}
			got = append(got, k.ID(m))
		}
		for _, m := range f[k.Name] {
			want = append(want, k.ID(m))
			out := cli.ok(k.Name, "get", k.ID(m), "-json")
			back := k.New()
			if err := protojson.Unmarshal([]byte(out), back); err != nil {
				t.Fatalf("%s: %s get %s -json: %v\n%s", how, k.Name, k.ID(m), err, out)
			}
			if !proto.Equal(back, canonicalEntity(m)) {
				t.Fatalf("%s: %s %s read back differs:\nwrote %v\nread  %v", how, k.Name, k.ID(m), m, back)
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %s ls -json lists %q, the fleet has %q", how, k.Plural, got, want)
		}
	}
	out := cli.ok("apply", "-f", file, "--dry-run")
	if !strings.Contains(out, "No changes") || !strings.Contains(out, " 0 to change") {
		t.Fatalf("%s: apply --dry-run of the same fleet shows a difference:\n%s", how, out)
	}
}

// roundTripChecks keeps the property test to a few seconds under -race
// unless -rapid.checks or RAPID_CHECKS asks for more.
const roundTripChecks = "25"

// TestRoundTrip is the management API's round-trip property: a generated
// valid fleet, over every entity kind and field, written with "apply -f",
// with "KIND set", or restored from a snapshot, reads back identical with
// "get -json" and shows no difference in "apply --dry-run"; applying it
// again changes nothing.
func TestRoundTrip(t *testing.T) {
	given := os.Getenv("RAPID_CHECKS") != ""
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "rapid.checks" })
	if fl := flag.Lookup("rapid.checks"); fl != nil && !given {
		old := fl.Value.String()
		fl.Value.Set(roundTripChecks)
		defer fl.Value.Set(old)
	}
	c := controltest.Start(t, 1, controltest.Options{})
	env := map[string]string{"MERIDIAN_CONTROL_ADDR": c.Members[0].URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.snap")
	ctl{t, env}.ok("cluster", "snapshot", "save", empty)
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		cli := ctl{rt, env}
		f := genFleet.Draw(rt, "fleet")
		file := filepath.Join(dir, fmt.Sprintf("fleet-%d.yaml", n))
		if err := os.WriteFile(file, fleetYAML(rt, f, rapid.Bool().Draw(rt, "unpopulated")), 0o600); err != nil {
			rt.Fatalf("%v", err)
		}
		cli.ok("cluster", "snapshot", "restore", empty)

		// apply -f, then again: the second is a no-op.
		out := cli.ok("apply", "-f", file)
		if f.size() > 0 && !strings.Contains(out, "Applied:") {
			rt.Fatalf("apply:\n%s", out)
		}
		checkFleet(rt, cli, f, file, "apply -f")
		if out := cli.ok("apply", "-f", file); !strings.Contains(out, "No changes") {
			rt.Fatalf("a second apply of the same fleet is not a no-op:\n%s", out)
		}

		// cluster snapshot save, then restore over an empty state.
		snap := filepath.Join(dir, fmt.Sprintf("fleet-%d.snap", n))
		cli.ok("cluster", "snapshot", "save", snap)
		cli.ok("cluster", "snapshot", "restore", empty)
		cli.ok("cluster", "snapshot", "restore", snap)
		checkFleet(rt, cli, f, file, "snapshot save+restore")

		// KIND set, one entity at a time in dependency order, providers
		// before models: a model's allowed_regions must name a region
		// something serves in when it is written.
		cli.ok("cluster", "snapshot", "restore", empty)
		order := slices.Clone(fsm.Kinds)
		slices.SortStableFunc(order, func(a, b *fsm.Kind) int {
			rank := func(k *fsm.Kind) int {
				switch k.Name {
				case fsm.KindRegion:
					return -3
				case fsm.KindNode:
					return -2
				case fsm.KindProvider:
					return -1
				}
				return 0
			}
			return rank(a) - rank(b)
		})
		for _, k := range order {
			for _, m := range f[k.Name] {
				cli.ok(setArgs(k, m)...)
			}
		}
		checkFleet(rt, cli, f, file, "KIND set")
	})
	t.Logf("%d fleets round-tripped", n)
}

// TestRoundTripCoversEveryField keeps the generator honest as entities
// grow: across a few hundred drawn fleets, every kind appears and every
// field of every entity (and of the messages inside them) is set at
// least once, so TestRoundTrip does test every field.
func TestRoundTripCoversEveryField(t *testing.T) {
	seen := map[string]bool{}
	var mark func(prefix string, r protoreflect.Message)
	mark = func(prefix string, r protoreflect.Message) {
		r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			name := prefix + "." + string(fd.Name())
			seen[name] = true
			switch {
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for i := 0; i < v.List().Len(); i++ {
					mark(name, v.List().Get(i).Message())
				}
			case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.MessageKind:
				mark(name, v.Message())
			}
			return true
		})
	}
	for i := range 300 {
		for kind, ms := range genFleet.Example(i) {
			for _, m := range ms {
				mark(kind, m.ProtoReflect())
			}
		}
	}
	// Fields only the control plane sets, which a write is refused for.
	serverSet := map[string]bool{"node.revoked": true, "node.joined_unix_ms": true, "node.nats_key": true}
	var missing []string
	var want func(prefix string, d protoreflect.MessageDescriptor)
	want = func(prefix string, d protoreflect.MessageDescriptor) {
		for i := 0; i < d.Fields().Len(); i++ {
			fd := d.Fields().Get(i)
			name := prefix + "." + string(fd.Name())
			if !seen[name] && !serverSet[name] {
				missing = append(missing, name)
			}
			if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
				want(name, fd.Message())
			}
		}
	}
	for _, k := range fsm.Kinds {
		want(k.Name, k.New().ProtoReflect().Descriptor())
	}
	if len(missing) > 0 {
		t.Fatalf("the fleet generator never sets %s", strings.Join(missing, ", "))
	}
}
