package opscheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	dfparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"gopkg.in/yaml.v3"
)

// root is the repository root, from ops/tools/opscheck.
const root = "../../.."

func repo(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(repo(pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	return files
}

func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known, err := KnownMetrics(repo("edge"), repo("control"), repo("shared"))
	if err != nil {
		t.Fatal(err)
	}
	return known
}

func TestParseUnit(t *testing.T) {
	u, err := ParseUnit(strings.NewReader("# c\n[Service]\nA=1\nA=\nB=x \\\n  y\n[Install]\nWantedBy=multi-user.target\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := u["Service"]["A"]; !slices.Equal(got, []string{"1", ""}) {
		t.Errorf("A = %q, want [1 \"\"]", got)
	}
	if v, _ := u.Last("Service", "B"); v != "x y" {
		t.Errorf("B = %q, want continuation joined", v)
	}
	for _, bad := range []string{"A=1\n", "[Service\n", "[Service]\nnovalue\n", "[Service]\nA=\\\n", "[]\n"} {
		if _, err := ParseUnit(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseUnit(%q) = nil error", bad)
		}
	}
}

func FuzzParseUnit(f *testing.F) {
	for _, s := range []string{"[Service]\nA=1\n", "[Unit]\nX=a \\\nb\n", "A=1", "[", "[S]\n=\n"} {
		f.Add(s)
	}
	for _, p := range []string{"meridian-edge.service", "meridian-control.service"} {
		if b, err := os.ReadFile(repo("ops", "systemd", p)); err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUnit(strings.NewReader(s))
		if err == nil && u == nil {
			t.Fatal("nil unit without error")
		}
	})
}

func TestUnknown(t *testing.T) {
	known := map[string]bool{"meridian_x_seconds": true}
	got := Unknown([]string{"meridian_x_seconds_bucket", "up", "meridian:rec", "meridian_y", "meridian_y_bucket"}, known, map[string]bool{"meridian:rec": true})
	if want := []string{"meridian_y", "meridian_y_bucket"}; !slices.Equal(got, want) {
		t.Errorf("Unknown = %q, want %q", got, want)
	}
	if names, err := MetricsIn(`sum(rate(a[5m])) / on() b{x="1"} + {__name__="c"}`); err != nil || !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("MetricsIn = %q, %v", names, err)
	}
	if _, err := MetricsIn(`sum(`); err == nil {
		t.Error("MetricsIn accepted a broken expression")
	}
}

// ruleFile is the part of a Prometheus rule file the checks read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) (map[string]ruleFile, map[string]bool) {
	t.Helper()
	files, recorded := map[string]ruleFile{}, map[string]bool{}
	for _, path := range glob(t, "ops/prometheus/*.yaml") {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var rf ruleFile
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		files[path] = rf
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					recorded[r.Record] = true
				}
			}
		}
	}
	return files, recorded
}

// TestRulesUseKnownMetrics: an alert on a metric no code exports never
// fires, and promtool cannot tell.
func TestRulesUseKnownMetrics(t *testing.T) {
	known := knownMetrics(t)
	files, recorded := readRules(t)
	alerts := 0
	for path, rf := range files {
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				names, err := MetricsIn(r.Expr)
				if err != nil {
					t.Errorf("%s: %s%s: %v", filepath.Base(path), r.Alert, r.Record, err)
					continue
				}
				if bad := Unknown(names, known, recorded); len(bad) > 0 {
					t.Errorf("%s: %s%s queries metrics no code exports: %v", filepath.Base(path), r.Alert, r.Record, bad)
				}
				if r.Alert != "" {
					alerts++
				}
			}
		}
	}
	if alerts < 20 {
		t.Errorf("found %d alerts across the rule files; the rule files did not parse as expected", alerts)
	}
}

// TestDashboards: every dashboard is JSON with a unique uid, and every
// panel's query parses and names metrics the code exports.
func TestDashboards(t *testing.T) {
	known := knownMetrics(t)
	_, recorded := readRules(t)
	uids := map[string]string{}
	for _, path := range glob(t, "ops/grafana/*.json") {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Title  string `json:"title"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid or title missing", path)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", other, path, d.UID)
		}
		uids[d.UID] = path
		if len(d.Panels) == 0 {
			t.Errorf("%s: no panels", path)
		}
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", filepath.Base(path), p.Title)
			}
			for _, tg := range p.Targets {
				names, err := MetricsIn(tg.Expr)
				if err != nil {
					t.Errorf("%s: panel %q: %v", filepath.Base(path), p.Title, err)
					continue
				}
				if bad := Unknown(names, known, recorded); len(bad) > 0 {
					t.Errorf("%s: panel %q queries metrics no code exports: %v", filepath.Base(path), p.Title, bad)
				}
			}
		}
	}
	if len(uids) < 3 {
		t.Errorf("want the fleet, PoP and control plane dashboards; found %d", len(uids))
	}
}

// cmdFlags returns the flags a command under dir defines: the first
// string argument of every fs.XxxVar / flag.Xxx call in its non-test files.
func cmdFlags(t *testing.T, dir string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`(?:fs|flag)\.[A-Z][A-Za-z0-9]*\((?:&[^,]+,\s*)?"([a-z0-9-]+)"`)
	flags := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			flags[string(m[1])] = true
		}
	}
	if len(flags) == 0 {
		t.Fatalf("no flags found in %s", dir)
	}
	return flags
}

// commands maps each binary the artefacts install to its main package.
var commands = map[string]string{
	"meridian-edge":    "edge/cmd/meridian-edge",
	"meridian-control": "control/cmd/meridian-control",
	"meridianctl":      "control/cmd/meridianctl",
	"mockprovider":     "scripts/mockprovider",
}

// checkCommandLine reports what is wrong with a command line that starts
// one of Meridian's binaries: an unknown binary or flag.
func checkCommandLine(t *testing.T, words []string) error {
	if len(words) == 0 {
		return errors.New("empty command")
	}
	bin := filepath.Base(words[0])
	dir, ok := commands[bin]
	if !ok {
		return fmt.Errorf("%s is not one of Meridian's binaries", words[0])
	}
	flags := cmdFlags(t, repo(dir))
	for _, w := range words[1:] {
		if !strings.HasPrefix(w, "-") || strings.HasPrefix(w, "$") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
		if !flags[name] {
			return fmt.Errorf("%s has no flag -%s", bin, name)
		}
	}
	return nil
}

// hardening is what every unit must say, key by key ("" = empty).
var hardening = map[string]string{
	"DynamicUser":             "yes",
	"ProtectSystem":           "strict",
	"NoNewPrivileges":         "yes",
	"CapabilityBoundingSet":   "",
	"AmbientCapabilities":     "",
	"ProtectHome":             "yes",
	"PrivateTmp":              "yes",
	"ProtectKernelTunables":   "yes",
	"ProtectKernelModules":    "yes",
	"ProtectKernelLogs":       "yes",
	"ProtectControlGroups":    "yes",
	"LockPersonality":         "yes",
	"RestrictSUIDSGID":        "yes",
	"RestrictNamespaces":      "yes",
	"SystemCallFilter":        "@system-service",
	"SystemCallArchitectures": "native",
}

func TestSystemdUnits(t *testing.T) {
	for _, path := range glob(t, "ops/systemd/*.service") {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		u, err := ParseUnit(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		name := filepath.Base(path)
		for k, want := range hardening {
			if got, ok := u.Last("Service", k); !ok || got != want {
				t.Errorf("%s: %s=%q, want %q", name, k, got, want)
			}
		}
		if v, _ := u.Last("Service", "StateDirectory"); v == "" {
			t.Errorf("%s: DynamicUser needs a StateDirectory for its state", name)
		}
		if v, _ := u.Last("Service", "RestrictAddressFamilies"); !strings.Contains(v, "AF_INET") || strings.Contains(v, "AF_PACKET") {
			t.Errorf("%s: RestrictAddressFamilies=%q", name, v)
		}
		if v, _ := u.Last("Service", "User"); v != "" {
			t.Errorf("%s: User=%s alongside DynamicUser", name, v)
		}
		for _, k := range []string{"ExecStartPre", "ExecStart"} {
			for _, line := range u["Service"][k] {
				if err := checkCommandLine(t, strings.Fields(line)); err != nil {
					t.Errorf("%s: %s: %v", name, k, err)
				}
			}
		}
		if len(u["Service"]["ExecStart"]) != 1 {
			t.Errorf("%s: want one ExecStart", name)
		}
		if name == "meridian-edge.service" {
			// Ollama and its runners are the edge's children in its
			// cgroup: the edge alone gets SIGTERM and stops them after
			// its drain; the group is killed at the timeout.
			if v, _ := u.Last("Service", "KillMode"); v != "mixed" {
				t.Errorf("%s: KillMode=%q, want mixed", name, v)
			}
			if _, ok := u.Last("Service", "Delegate"); ok {
				t.Errorf("%s: Delegate= would let Ollama leave the unit's cgroup", name)
			}
		}
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on the units, in
// a scratch root holding stand-ins for the binaries; any complaint fails.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; TestSystemdUnits still checks the units")
	}
	sys := "/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(sys, "sysinit.target")); err != nil {
		t.Skipf("no %s/sysinit.target to verify against", sys)
	}
	dir := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-r", sys, filepath.Join(dir, "lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	for bin := range commands {
		if err := os.WriteFile(filepath.Join(dir, "usr/local/bin", bin), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, path := range glob(t, "ops/systemd/*.service") {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "etc/systemd/system", filepath.Base(path)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(path))
	}
	out, err := exec.Command(sa, append([]string{"verify", "--root=" + dir}, names...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDockerfiles parses each Dockerfile as BuildKit does, with its
// linter, and checks what parsing cannot: stages named by COPY --from
// exist, the Go packages built exist, copied files exist, the final image
// runs as a non-root user and starts a binary it holds.
func TestDockerfiles(t *testing.T) {
	for _, path := range glob(t, "ops/docker/*.Dockerfile") {
		name := filepath.Base(path)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ast, err := dfparser.Parse(bytes.NewReader(b))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var warnings []string
		lint := linter.New(&linter.Config{ExperimentalAll: true, Warn: func(rule, _, _, msg string, loc []dfparser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			warnings = append(warnings, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
		}})
		stages, _, err := instructions.Parse(ast.AST, lint)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, w := range warnings {
			t.Errorf("%s: %s", name, w)
		}
		if _, err := os.Stat(path + ".dockerignore"); err != nil {
			t.Errorf("%s: no %s.dockerignore: the build context would carry bin/ and .git", name, name)
		}
		checkStages(t, name, stages)
	}
}

var goBuild = regexp.MustCompile(`go build [^&;]*?-o (\S+) (\./[^\s&;]+)`)

func checkStages(t *testing.T, name string, stages []instructions.Stage) {
	if len(stages) < 2 {
		t.Errorf("%s: want a multi-stage build, found %d stage(s)", name, len(stages))
		return
	}
	built := map[string]bool{}
	for i, s := range stages {
		if !strings.Contains(s.BaseName, ":") || strings.HasSuffix(s.BaseName, ":latest") {
			if s.BaseName != "scratch" {
				t.Errorf("%s: stage %d base %q is not pinned to a tag", name, i, s.BaseName)
			}
		}
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.CopyCommand:
				if c.From == "" {
					for _, src := range c.SourcePaths {
						if _, err := os.Stat(repo(src)); err != nil {
							t.Errorf("%s: COPY %s: not in the repository", name, src)
						}
					}
					continue
				}
				if !slices.ContainsFunc(stages[:i], func(p instructions.Stage) bool { return p.Name == c.From }) {
					t.Errorf("%s: COPY --from=%s names no earlier stage", name, c.From)
				}
			case *instructions.RunCommand:
				for _, m := range goBuild.FindAllStringSubmatch(strings.Join(c.CmdLine, " "), -1) {
					pkg := strings.TrimPrefix(m[2], "./")
					if !slices.Contains(mapsValues(commands), pkg) {
						t.Errorf("%s: go build %s: not one of Meridian's commands", name, m[2])
					} else if err := isMainPackage(repo(pkg)); err != nil {
						t.Errorf("%s: go build %s: %v", name, m[2], err)
					}
					built[filepath.Base(m[1])] = true
				}
			}
		}
	}
	final := stages[len(stages)-1]
	var user string
	var entry []string
	var copied []string
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entry = c.CmdLine
		case *instructions.CopyCommand:
			copied = append(copied, c.DestPath)
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("%s: the final image runs as %q; want a non-root USER", name, user)
	}
	if len(entry) == 0 {
		t.Errorf("%s: no ENTRYPOINT", name)
		return
	}
	if !slices.Contains(copied, entry[0]) {
		t.Errorf("%s: ENTRYPOINT %s is not copied into the final image", name, entry[0])
	}
	if err := checkCommandLine(t, entry); err != nil {
		t.Errorf("%s: ENTRYPOINT: %v", name, err)
	}
	if !built[filepath.Base(entry[0])] {
		t.Errorf("%s: ENTRYPOINT %s is not built by go build in this file", name, entry[0])
	}
}

func mapsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func isMainPackage(dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && !strings.HasSuffix(f, "_test.go") && regexp.MustCompile(`(?m)^package main$`).Match(b) {
			return nil
		}
	}
	return fmt.Errorf("no main package in %s", dir)
}

// TestCompose checks the demo's wiring: images built from Dockerfiles
// that exist, dependencies, volumes and networks that are declared, and
// commands that start real binaries with real flags.
func TestCompose(t *testing.T) {
	path := repo("ops/docker/compose.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image      string         `yaml:"image"`
			Build      map[string]any `yaml:"build"`
			Entrypoint []string       `yaml:"entrypoint"`
			Command    []string       `yaml:"command"`
			DependsOn  any            `yaml:"depends_on"`
			Volumes    []string       `yaml:"volumes"`
			Networks   any            `yaml:"networks"`
		} `yaml:"services"`
		Volumes  map[string]any `yaml:"volumes"`
		Networks map[string]any `yaml:"networks"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	images := map[string]string{} // image -> Dockerfile
	for name, s := range c.Services {
		if s.Build == nil {
			continue
		}
		df, _ := s.Build["dockerfile"].(string)
		ctx, _ := s.Build["context"].(string)
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), ctx, df)); err != nil || df == "" {
			t.Errorf("service %s: dockerfile %q in context %q: %v", name, df, ctx, err)
		}
		images[s.Image] = df
	}
	entrypoints := map[string]string{
		"meridian-control": "/usr/local/bin/meridian-control", "meridian-edge": "/usr/local/bin/meridian-edge",
		"meridian-mockprovider": "/usr/local/bin/mockprovider",
	}
	var controls, edges int
	for name, s := range c.Services {
		if _, ok := images[s.Image]; !ok {
			t.Errorf("service %s: image %q is built by no service", name, s.Image)
		}
		var deps []string
		switch d := s.DependsOn.(type) {
		case []any:
			for _, x := range d {
				deps = append(deps, fmt.Sprint(x))
			}
		case map[string]any:
			for x := range d {
				deps = append(deps, x)
			}
		}
		for _, d := range deps {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("service %s depends on %s, which does not exist", name, d)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(filepath.Dir(path), src)); err != nil {
					t.Errorf("service %s: bind mount %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("service %s: volume %s is not declared", name, src)
			}
		}
		if nets, ok := s.Networks.(map[string]any); ok {
			for n := range nets {
				if _, ok := c.Networks[n]; !ok {
					t.Errorf("service %s: network %s is not declared", name, n)
				}
			}
		}
		if bin, ok := entrypoints[s.Image]; ok && len(s.Entrypoint) == 0 {
			if err := checkCommandLine(t, append([]string{bin}, s.Command...)); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
		}
		switch s.Image {
		case "meridian-control":
			controls++
		case "meridian-edge":
			edges++
		}
	}
	if controls != 3 || edges != 3 {
		t.Errorf("want 3 control nodes and 3 edges, found %d and %d", controls, edges)
	}
}

// helm runs the helm that make ops-check built.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	bin := os.Getenv("MERIDIAN_HELM")
	if bin == "" {
		t.Skip("MERIDIAN_HELM is not set: make ops-check builds helm and sets it")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// edgeCheck runs `meridian-edge -check` on an edge config as a pod of
// the chart would start it: its address and node ID filled in, the
// gossip key in the environment.
func edgeCheck(t *testing.T, cfg string) error {
	t.Helper()
	bin := os.Getenv("MERIDIAN_EDGE_BIN")
	if bin == "" {
		t.Log("MERIDIAN_EDGE_BIN is not set: rendered edge configs are not run through meridian-edge -check")
		return nil
	}
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(cfg, "@POD_IP@", "10.0.0.5")), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "-config", path, "-check")
	cmd.Env = append(os.Environ(), "MERIDIAN_NODE_ID=eu-west-node-a", "MERIDIAN_GOSSIP_KEYS=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("meridian-edge -check: %v: %s", err, out)
	}
	return nil
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec map[string]any    `yaml:"spec"`
	Data map[string]string `yaml:"data"`
}

// TestHelmTemplate renders the chart for 1, 3 and 5 control nodes and
// checks what it renders parses and holds together.
func TestHelmTemplate(t *testing.T) {
	chart := repo("ops/helm/meridian")
	for _, replicas := range []int{1, 3, 5} {
		out, err := helm(t, "template", "mesh", chart, "--namespace", "meridian", "--set", fmt.Sprintf("control.replicas=%d", replicas),
			"--set", "edges.joinTokens.eu-west-node-a=tok")
		if err != nil {
			t.Fatal(err)
		}
		var objs []k8sObject
		dec := yaml.NewDecoder(bytes.NewReader(out))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("replicas=%d: rendered YAML does not parse: %v", replicas, err)
			}
			if o.Kind != "" {
				objs = append(objs, o)
			}
		}
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[o.Kind]++
			switch o.Kind {
			case "StatefulSet":
				if got := o.Spec["replicas"]; got != replicas {
					t.Errorf("replicas=%d: StatefulSet has %v replicas", replicas, got)
				}
				args := fmt.Sprint(o.Spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["args"])
				peers := regexp.MustCompile(`-peers=(\S+)`).FindStringSubmatch(args)
				switch {
				case replicas == 1 && !strings.Contains(args, "-bootstrap"):
					t.Errorf("one control node must bootstrap alone: %s", args)
				case replicas > 1 && (peers == nil || strings.Count(peers[1], "=") != replicas):
					t.Errorf("replicas=%d: -peers lists the wrong voters: %v", replicas, peers)
				}
				if err := checkCommandLine(t, append([]string{"meridian-control"}, strings.Fields(strings.Trim(args, "[]"))...)); err != nil {
					t.Errorf("replicas=%d: %v", replicas, err)
				}
			case "ConfigMap":
				var cfg map[string]any
				if err := yaml.Unmarshal([]byte(o.Data["edge.yaml"]), &cfg); err != nil || cfg["region"] == nil {
					t.Errorf("ConfigMap %s: edge.yaml does not parse or has no region: %v", o.Metadata.Name, err)
				}
				if err := edgeCheck(t, o.Data["edge.yaml"]); err != nil {
					t.Errorf("ConfigMap %s: %v", o.Metadata.Name, err)
				}
			case "Service":
				if strings.HasSuffix(o.Metadata.Name, "-control-peers") && o.Spec["clusterIP"] != "None" {
					t.Errorf("the Raft and NATS route service must be headless")
				}
			}
		}
		for kind, n := range map[string]int{"StatefulSet": 1, "DaemonSet": 1, "ConfigMap": 1, "Secret": 4, "PodDisruptionBudget": 1} {
			if kinds[kind] != n {
				t.Errorf("replicas=%d: rendered %d %s, want %d", replicas, kinds[kind], kind, n)
			}
		}
	}
	if _, err := helm(t, "template", "mesh", chart, "--set", "control.replicas=2"); err == nil || !strings.Contains(err.Error(), "1, 3 or 5") {
		t.Errorf("an even control plane rendered: %v", err)
	}
}
