// Package vertex is the adapter for Google Vertex AI. One Vertex
// provider serves two publishers' models in one project and region:
// Gemini models through generateContent and streamGenerateContent (the
// gemini adapter's translation, at Vertex's URLs), and Claude models
// through rawPredict and streamRawPredict (the anthropic adapter's,
// with the model in the URL and anthropic_version in the body). A model
// whose name starts with "claude" is Anthropic's; any other is Google's.
//
// Requests carry an OAuth access token of a service account, minted and
// refreshed by cloud.google.com/go/auth from the provider's credentials
// JSON (its secret), or from Application Default Credentials when it has
// none; never a hand-rolled JWT. Tokens and keys never go into a message
// or a URL.
package vertex

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/anthropic"
	"github.com/meridian-mesh/meridian/edge/provider/gemini"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Scope is the OAuth scope Vertex AI requests need.
const Scope = "https://www.googleapis.com/auth/cloud-platform"

// Adapter talks to one Vertex AI provider.
type Adapter struct {
	gemini *gemini.Adapter
	claude *anthropic.Adapter
}

// New returns an adapter for p, of kind vertex. p must have passed table
// validation. p's secret, when it has one, is a service account's
// credentials JSON; the token endpoint is the one it names.
func New(p table.Provider) (*Adapter, error) {
	opts := &credentials.DetectOptions{Scopes: []string{Scope}}
	var (
		creds *auth.Credentials
		err   error
	)
	if key := p.APIKey.Reveal(); key != "" {
		creds, err = credentials.NewCredentialsFromJSON(credentials.ServiceAccount, []byte(key), opts)
	} else {
		creds, err = credentials.DetectDefault(opts)
	}
	if err != nil {
		// The library's message may quote the JSON it could not use.
		return nil, fmt.Errorf("provider %q: Google credentials are not a usable service account", p.ID)
	}
	return NewWithTokens(p, creds), nil
}

// NewWithTokens returns an adapter whose requests carry tokens from tp:
// for tests and benchmarks.
func NewWithTokens(p table.Provider, tp auth.TokenProvider) *Adapter {
	sign := func(ctx context.Context, req *http.Request, _ []byte) error {
		tok, err := tp.Token(ctx)
		if err != nil {
			return fmt.Errorf("google token: %w", err)
		}
		typ := tok.Type
		if typ == "" || strings.EqualFold(typ, "bearer") {
			typ = "Bearer"
		}
		req.Header.Set("Authorization", typ+" "+tok.Value)
		return nil
	}
	prefix := "/v1/projects/" + url.PathEscape(p.Project) + "/locations/" + url.PathEscape(p.CloudRegionOf()) + "/publishers/"
	return &Adapter{
		gemini: gemini.NewVertex(p, sign, func(base, model string, stream bool) string {
			u := base + prefix + "google/models/" + url.PathEscape(strings.TrimPrefix(model, "models/"))
			if stream {
				return u + ":streamGenerateContent?alt=sse"
			}
			return u + ":generateContent"
		}),
		claude: anthropic.NewVertex(p, sign, func(base, model string, stream bool) string {
			u := base + prefix + "anthropic/models/" + url.PathEscape(model)
			if stream {
				return u + ":streamRawPredict"
			}
			return u + ":rawPredict"
		}),
	}
}

// IsClaude tells whether model is served by Anthropic's publisher.
func IsClaude(model string) bool { return strings.HasPrefix(model, "claude") }

// Do implements provider.Provider.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	if IsClaude(req.UpstreamModel(upstreamModel)) {
		return a.claude.Do(ctx, req, upstreamModel)
	}
	return a.gemini.Do(ctx, req, upstreamModel)
}

// Close releases idle connections.
func (a *Adapter) Close() {
	a.gemini.Close()
	a.claude.Close()
}
