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

	"github.com/meridian-mesh/meridian/edge/provider/anthropic"
	"github.com/meridian-mesh/meridian/edge/provider/gemini"
	"github.com/meridian-mesh/meridian/edge/provider/ollama"
	"github.com/meridian-mesh/meridian/edge/provider/openai"
	"github.com/meridian-mesh/meridian/shared/llm"
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

var (
	_ Provider = (*openai.Adapter)(nil)
	_ Provider = (*anthropic.Adapter)(nil)
	_ Provider = (*gemini.Adapter)(nil)
	_ Provider = (*ollama.Adapter)(nil)
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
	}
	return nil, fmt.Errorf("provider %q: unknown kind %q", p.ID, p.Kind)
}
