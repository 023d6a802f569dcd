// Package azure is the adapter for Azure OpenAI. Azure speaks OpenAI's
// wire format, so requests and answers go through the openai adapter
// byte for byte; what differs is here: the deployment URL
// ({base}/openai/deployments/{deployment}/chat/completions?api-version=…,
// the deployment being the route's upstream model name), the api-key
// header or a Microsoft Entra ID bearer token, and Azure's error bodies,
// content-filter refusals included.
//
// It runs no login flow: an Entra token is read from a file (again each
// time the file changes, so whatever renews it needs no restart) or
// comes with the table. Neither the key nor the token ever goes into a
// message or a URL.
package azure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/openai"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/tidwall/gjson"
)

// New returns an adapter for p, of kind azure. p must have passed table
// validation.
func New(p table.Provider) (*openai.Adapter, error) {
	version := p.APIVersion
	if version == "" {
		version = table.DefaultAzureAPIVersion
	}
	query := "?api-version=" + url.QueryEscape(version)
	endpoint := func(base string, op llm.Op, model string) string {
		return base + "/openai/deployments/" + url.PathEscape(model) + openai.Path(op) + query
	}
	s := upstream.Style{KeyHeader: "Api-Key", StreamAccept: "text/event-stream", ParseError: ParseError}
	if p.Auth == table.AuthEntra {
		tok := &token{file: p.TokenFile, value: p.APIKey.Reveal()}
		if tok.file == "" && tok.value == "" {
			return nil, fmt.Errorf("provider %q: auth %q needs a token (secret_ref or token_file)", p.ID, table.AuthEntra)
		}
		p.APIKey = "" // the token goes in Authorization, by Sign
		s.Sign = tok.sign
	}
	return openai.NewWith(p, s, endpoint), nil
}

// token is an Entra ID access token, from a file read again when its
// size or modification time changes, or fixed.
type token struct {
	file string

	mu      sync.Mutex
	value   string
	mod     time.Time
	size    int64
	checked time.Time
}

// readToken reads the token file through an os.Root on its directory,
// so a symlink cannot lead out of it (the path passed the secrets
// policy, which confines files to the secrets directory). It returns a
// nil b when the file's size and modification time are mod and size.
func readToken(path string, mod time.Time, size int64) (b []byte, fi os.FileInfo, err error) {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	f, err := root.Open(filepath.Base(path))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, nil, err
	}
	if fi.ModTime().Equal(mod) && fi.Size() == size {
		return nil, fi, nil
	}
	b, err = io.ReadAll(io.LimitReader(f, 64<<10))
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, fi, err
}

// recheck bounds how often the token file is looked at: a stat per
// request would cost more than the rest of the adapter.
const recheck = time.Second

func (t *token) get() (string, error) {
	if t.file == "" {
		return t.value, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if t.value != "" && now.Sub(t.checked) < recheck {
		return t.value, nil
	}
	t.checked = now
	b, fi, err := readToken(t.file, t.mod, t.size)
	if err != nil {
		if t.value != "" {
			return t.value, nil // keep the last good token while the file is being replaced
		}
		return "", fmt.Errorf("entra token file: %w", err)
	}
	if b == nil {
		return t.value, nil // unchanged
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		if t.value != "" {
			return t.value, nil // a renewer truncated the file and writes it next
		}
		return "", errors.New("entra token file is empty")
	}
	t.value, t.mod, t.size = v, fi.ModTime(), fi.Size()
	return v, nil
}

func (t *token) sign(_ context.Context, req *http.Request, _ []byte) error {
	v, err := t.get()
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+v)
	return nil
}

// ParseError reads an Azure OpenAI error body. Azure answers in
// OpenAI's shape, {"error":{"code","message","param","type"}}, with its
// own codes ("DeploymentNotFound", "429", "content_filter") and, for a
// content-filter refusal (400 content_filter), the categories that
// tripped in error.innererror.content_filter_result; those are named in
// the message so the client learns why, in its own format. A bare
// {"statusCode":401,"message":…} comes from Azure's gateway.
func ParseError(b []byte) upstream.ErrorDetail {
	d := openai.ParseError(b)
	if d.Message == "" {
		if m := gjson.GetBytes(b, "message"); m.Type == gjson.String {
			d.Message = m.Str
		}
	}
	e := gjson.GetBytes(b, "error")
	if d.Code == "" {
		// Azure sometimes sends the code as a number.
		if c := e.Get("code"); c.Exists() {
			d.Code = c.Raw
		}
	}
	if d.Code == "content_filter" || e.Get("innererror.code").Str == "ResponsibleAIPolicyViolation" {
		d.Code = "content_filter"
		if d.Param == "" {
			d.Param = "prompt"
		}
		if f := filtered(e.Get("innererror.content_filter_result")); f != "" {
			d.Message += " (filtered: " + f + ")"
		}
	}
	return d
}

// filtered lists the categories a content_filter_result marks filtered,
// with their severity: "hate=high, violence=medium", sorted.
func filtered(r gjson.Result) string {
	var out []string
	r.ForEach(func(k, v gjson.Result) bool {
		if v.Get("filtered").Bool() {
			s := k.Str
			if sev := v.Get("severity").Str; sev != "" {
				s += "=" + sev
			}
			out = append(out, s)
		}
		return len(out) < 16
	})
	sort.Strings(out)
	return strings.Join(out, ", ")
}
