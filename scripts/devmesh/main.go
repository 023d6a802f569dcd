// Command devmesh brings up a whole Meridian mesh on this machine for
// trying it out, from the real binaries (`make run` builds them first):
// a control plane (one node, or three with -nodes 3) with the fleet in
// fleet.yaml applied through meridianctl, three edges in eu-west,
// us-east and ap-south linked over QUIC through a WAN relay, and mock
// OpenAI, Anthropic and Gemini providers. scripts/devmesh/mesh does the
// work; `make e2e` starts the same mesh.
//
// It prints requests ready to paste and runs until interrupted. A process
// that dies is reported and the rest keep serving; Ctrl-C stops every
// process it started and exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/scripts/devmesh/mesh"
)

func main() { os.Exit(devmesh()) }

func devmesh() int {
	o := mesh.RunOptions()
	flag.StringVar(&o.Bin, "bin", o.Bin, "folder holding meridian-edge, meridian-control, meridianctl and ollama (make build ollama)")
	flag.StringVar(&o.Dir, "dir", o.Dir, "folder for the mesh's state: models, certificates, Raft data, Ollama models")
	flag.IntVar(&o.ControlNodes, "nodes", o.ControlNodes, "control plane nodes: 1 or 3")
	flag.StringVar(&o.LogLevel, "log-level", o.LogLevel, "the processes' log level: debug, info, warn or error")
	flag.BoolVar(&o.Leaves, "leaves", false, "one regional NATS leaf node per region (meridian-control leaf); each edge connects to its region's")
	flag.Parse()
	defer foreground()()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "devmesh:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, o mesh.Options, out io.Writer) error {
	fmt.Fprintln(out, "devmesh: starting the control plane, the mock providers and three edges (the first start loads the models: up to a minute)")
	start := time.Now()
	m, err := mesh.Start(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: Start stopped what it had started
		}
		return err
	}
	defer func() {
		fmt.Fprintln(out, "devmesh: stopping the mesh")
		m.Stop()
		fmt.Fprintln(out, "devmesh: stopped")
	}()
	printGuide(out, m, o, time.Since(start))
	for _, site := range mesh.Sites {
		if u := m.LeafStatusURL(site.Region); u != "" {
			fmt.Fprintf(out, "  leaf-%s: the region's NATS leaf node; its edge connects only to it (%s)\n", site.Region, u)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case name := <-m.Exited():
			fmt.Fprintf(out, "devmesh: %s is down; the other processes keep serving (Ctrl-C stops the mesh)\n", name)
		}
	}
}

func printGuide(out io.Writer, m *mesh.Mesh, o mesh.Options, took time.Duration) {
	eu, us, ap := m.Edges[0], m.Edges[1], m.Edges[2]
	fmt.Fprintf(out, `
Meridian dev mesh is up in %[13]v: %[9]d control node(s), three edges, every route from the control plane.
  control    %[1]s   (export MERIDIAN_CONTROL_ADDR=%[1]s MERIDIAN_CONTROL_TOKEN=%[2]s)
  eu-west-1  %[3]s   runs "tiny" on its own Ollama
  us-east-1  %[4]s   runs no model: forwards to its peers
  ap-south-1 %[5]s   runs "tiny" and "tiny-repeat"
  Links are delayed (WAN relay) one way eu-west–us-east %[10]v, eu-west–ap-south %[11]v, us-east–ap-south %[14]v.
  Client keys: %[6]s (any region), %[7]s (EU only).

Try it (look at x-meridian-route in each answer):

  # A local answer: eu-west-1 runs tiny itself.
  curl -s %[3]s/v1/chat/completions -D - -H 'Authorization: Bearer %[6]s' -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":12,"messages":[{"role":"user","content":"hello"}]}' | grep -i -e x-meridian-route -e content

  # A peer hop: ask eu-west for a model only ap-south holds.
  curl -s %[3]s/v1/chat/completions -D - -H 'Authorization: Bearer %[6]s' -H 'Content-Type: application/json' \
    -d '{"model":"tiny-repeat","max_tokens":12,"messages":[{"role":"user","content":"hello"}]}' | grep -i x-meridian-route

  # us-east holds no model: a client in Asia (a trusted location header) lands on ap-south,
  # one in Europe on eu-west.
  curl -s %[4]s/v1/chat/completions -D - -H 'Authorization: Bearer %[6]s' -H 'Content-Type: application/json' \
    -H 'X-Meridian-Client-Location: 19.07,72.88' \
    -d '{"model":"tiny","max_tokens":12,"messages":[{"role":"user","content":"hello"}]}' | grep -i x-meridian-route
  curl -s %[4]s/v1/chat/completions -D - -H 'Authorization: Bearer %[6]s' -H 'Content-Type: application/json' \
    -H 'X-Meridian-Client-Location: 53.35,-6.26' \
    -d '{"model":"tiny","max_tokens":12,"messages":[{"role":"user","content":"hello"}]}' | grep -i x-meridian-route

  # The EU-only key is refused a model that runs only outside the EU (403 region_not_allowed) ...
  curl -s %[4]s/v1/chat/completions -H 'Authorization: Bearer %[7]s' -H 'Content-Type: application/json' \
    -d '{"model":"tiny-repeat","messages":[{"role":"user","content":"hello"}]}'
  # ... and served in the EU, whichever edge it asks.
  curl -s %[5]s/v1/chat/completions -D - -H 'Authorization: Bearer %[7]s' -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":12,"messages":[{"role":"user","content":"hello"}]}' | grep -i x-meridian-route

  # Provider models through the mocks, streamed, and with the Anthropic format.
  curl -sN %[4]s/v1/chat/completions -H 'Authorization: Bearer %[6]s' -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream to me"}]}'
  curl -s %[3]s/v1/messages -H 'x-api-key: %[6]s' -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' \
    -d '{"model":"gemini-flash","max_tokens":64,"messages":[{"role":"user","content":"Anthropic format, Gemini model"}]}'

  # The dry run: where a request would go, and why.
  curl -s '%[4]s/v1/meridian/route?model=tiny-repeat&key=key-eu'

  # The SDKs: any OpenAI or Anthropic client, pointed at an edge.
  (cd scripts/sdktest/node && OPENAI_BASE_URL=%[3]s/v1 OPENAI_API_KEY=%[6]s node -e '
    const OpenAI = require("openai");
    new OpenAI().chat.completions.create({model: "tiny-repeat", max_tokens: 8, messages: [{role: "user", content: "hi"}]})
      .withResponse().then(({data, response}) => console.log(response.headers.get("x-meridian-route"), data.choices[0].message))')

  # The control plane's view, and a change every edge follows.
  %[8]s/meridianctl status
  %[8]s/meridianctl placement ls

  # Kill eu-west-1 (devmesh says it died; its Ollama dies with it), then ask us-east-1 for tiny
  # again: ap-south-1 answers.
  kill -9 %[12]d

Ctrl-C stops the mesh (in-flight streams are drained first).
`, m.ControlURL(), mesh.AdminToken, eu.URL, us.URL, ap.URL, mesh.KeyOpen, mesh.KeyEU, o.Bin, o.ControlNodes,
		o.Delay["eu-west/us-east"], o.Delay["eu-west/ap-south"], eu.Pid(), took.Round(100*time.Millisecond), o.Delay["us-east/ap-south"])
}
