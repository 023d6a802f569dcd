package table

import (
	"fmt"
	"sort"
	"strings"
)

// Provider kinds beyond OpenAI's. Each kind names a wire format an
// adapter speaks.
const (
	// KindAnthropic is Anthropic's Messages API, with x-api-key auth.
	KindAnthropic = "anthropic"
	// KindGemini is Google's Gemini generateContent API, with
	// x-goog-api-key auth.
	KindGemini = "gemini"
	// KindOllama is Ollama's native API: /api/chat and /api/embed.
	KindOllama = "ollama"
	// KindLocal is the node's own inference engine: the Ollama its edge
	// supervises or attaches to (the edge's "local" config section). It
	// has no base URL in the table, because its address is the node's
	// own and may change when the engine restarts.
	KindLocal = "local"
)

func init() { knownKinds = append(knownKinds, KindAnthropic, KindGemini, KindOllama, KindLocal) }

// Preset is a named provider: its wire format and default base URL, so a
// user configures a provider with a preset and a key.
type Preset struct {
	Kind    string
	BaseURL string // empty: the user must give base_url
}

// Presets are the providers Meridian knows by name.
var Presets = map[string]Preset{
	"openai":            {KindOpenAI, "https://api.openai.com/v1"},
	"anthropic":         {KindAnthropic, "https://api.anthropic.com/v1"},
	"gemini":            {KindGemini, "https://generativelanguage.googleapis.com/v1beta"},
	"mistral":           {KindOpenAI, "https://api.mistral.ai/v1"},
	"deepseek":          {KindOpenAI, "https://api.deepseek.com/v1"},
	"groq":              {KindOpenAI, "https://api.groq.com/openai/v1"},
	"together":          {KindOpenAI, "https://api.together.xyz/v1"},
	"openrouter":        {KindOpenAI, "https://openrouter.ai/api/v1"},
	"ollama":            {KindOllama, "http://127.0.0.1:11434"},
	"vllm":              {KindOpenAI, "http://127.0.0.1:8000/v1"},
	"openai-compatible": {KindOpenAI, ""},
	// Azure's base URL is the resource's own endpoint,
	// https://RESOURCE.openai.azure.com; Bedrock's and Vertex's follow
	// from the provider's cloud region.
	"azure":   {KindAzure, ""},
	"bedrock": {KindBedrock, ""},
	"vertex":  {KindVertex, ""},
}

// responsesPresets are the presets whose upstream speaks OpenAI's
// Responses API (POST /responses): a Responses client's request goes to
// them as it came, and their answer comes back as they sent it.
var responsesPresets = map[string]bool{"openai": true}

// SpeaksResponses reports whether a provider configured with preset
// serves OpenAI's Responses API.
func SpeaksResponses(preset string) bool { return responsesPresets[preset] }

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// applyPreset fills p's kind and base URL from its preset where they are
// empty; explicit values win, so a preset can point at a proxy or a
// regional endpoint.
func applyPreset(p *Provider) error {
	if p.Preset == "" {
		return nil
	}
	pr, ok := Presets[p.Preset]
	if !ok {
		return &FieldError{Msg: fmt.Sprintf("unknown preset %q (known: %s)", p.Preset, strings.Join(PresetNames(), ", "))}
	}
	if p.Kind == "" {
		p.Kind = pr.Kind
	} else if p.Kind != pr.Kind {
		return &FieldError{Msg: fmt.Sprintf("kind %q contradicts preset %q, which is %q", p.Kind, p.Preset, pr.Kind)}
	}
	if p.BaseURL == "" {
		if pr.BaseURL == "" && (pr.Kind == KindBedrock || pr.Kind == KindVertex) {
			return nil // derived from the cloud region
		}
		if pr.BaseURL == "" {
			return &FieldError{Msg: fmt.Sprintf("preset %q needs base_url", p.Preset)}
		}
		p.BaseURL = pr.BaseURL
	}
	return nil
}
