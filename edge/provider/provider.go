// Package provider defines what a target that can serve requests looks
// like to the gateway, and builds one from a routing table entry.
//
// Adapters live in sub-packages, one per wire format. They translate the
// canonical llm.Request into the upstream's format and the upstream's
// answer back, and map every upstream failure to an *llm.Error whose
// message is safe to show a client.
package provider

import (
	"context"
	"fmt"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/anthropic"
	"github.com/meridian-mesh/meridian/edge/provider/azure"
	"github.com/meridian-mesh/meridian/edge/provider/bedrock"
	"github.com/meridian-mesh/meridian/edge/provider/gemini"
	"github.com/meridian-mesh/meridian/edge/provider/ollama"
	"github.com/meridian-mesh/meridian/edge/provider/openai"
	"github.com/meridian-mesh/meridian/edge/provider/vertex"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Provider serves requests for one routing table provider entry.
type Provider interface {
	// Do sends req to the upstream, asking for upstreamModel. Errors are
	// *llm.Error, or the context's error when ctx ends first.
	Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error)
	// Close releases idle connections.
	Close()
}

// Loaded is implemented by targets that know their own state exactly,
// such as the node's local engine. The gateway asks them before each
// attempt instead of learning from failures: it passes a target that is
// down or full by (when another remains), and keeps no circuit breaker
// for it, so a moment's full queue never benches it for a cooldown.
type Loaded interface {
	Load() Load
}

// Load is a Loaded target's state.
type Load struct {
	// Up reports a target able to serve.
	Up bool `json:"up"`
	// Running counts admitted requests, Queued those of them waiting for
	// a slot; Capacity is how many may be admitted at once.
	Running  int `json:"running"`
	Queued   int `json:"queued"`
	Capacity int `json:"capacity"`
	// TokensPerSecond is the recent generation speed per request.
	TokensPerSecond float64 `json:"tokens_per_second"`
}

// Unavailable says why a request sent now would be refused: "down",
// "queue-full", or "" when it would be admitted.
func (l Load) Unavailable() string {
	switch {
	case !l.Up:
		return "down"
	case l.Running >= l.Capacity:
		return "queue-full"
	}
	return ""
}

var (
	_ Provider = (*openai.Adapter)(nil)
	_ Provider = (*anthropic.Adapter)(nil)
	_ Provider = (*gemini.Adapter)(nil)
	_ Provider = (*ollama.Adapter)(nil)
	_ Provider = (*bedrock.Adapter)(nil)
	_ Provider = (*vertex.Adapter)(nil)
)

// New builds the adapter for p's kind. p must have passed table
// validation, which also fills its kind from a preset.
func New(p table.Provider) (Provider, error) {
	switch p.Kind {
	case table.KindOpenAI:
		return openai.New(p)
	case table.KindAnthropic:
		return anthropic.New(p)
	case table.KindGemini:
		return gemini.New(p)
	case table.KindOllama:
		return ollama.New(p)
	case table.KindAzure:
		return azure.New(p)
	case table.KindBedrock:
		return bedrock.New(p)
	case table.KindVertex:
		return vertex.New(p)
	}
	return nil, fmt.Errorf("provider %q: unknown kind %q", p.ID, p.Kind)
}
