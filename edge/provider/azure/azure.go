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
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/openai"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
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
	var (
		d             upstream.ErrorDetail
		top, str, raw string // message, error as a string, error.code's bytes
		inner, filter string // error.innererror's code, what its content_filter_result lists
		seen          uint16
		hasCode       bool
	)
	s := jsonscan.New(b)
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "message":
			top = firstStr(s, &seen, seenTop, top)
		case "error":
			if once(&seen, seenError) {
				switch s.Peek() {
				case jsonscan.String:
					str = s.Str()
				case jsonscan.Object:
					s.Object(func(k []byte) bool {
						switch string(k) {
						case "message":
							d.Message = firstStr(s, &seen, seenMessage, d.Message)
						case "param":
							d.Param = firstStr(s, &seen, seenParam, d.Param)
						case "type":
							d.Type = firstStr(s, &seen, seenType, d.Type)
						case "code":
							if once(&seen, seenCode) {
								hasCode = true
								r := s.Raw()
								if raw = string(r); len(r) > 0 && r[0] == '"' {
									d.Code = jsonscan.New(r).Str()
								}
							}
						case "innererror":
							if once(&seen, seenInner) && s.Peek() == jsonscan.Object {
								s.Object(func(k []byte) bool {
									switch string(k) {
									case "code":
										inner = firstStr(s, &seen, seenInnerCode, inner)
									case "content_filter_result":
										if once(&seen, seenFilter) {
											filter = filtered(s)
										}
									}
									return true
								})
							}
						}
						return true
					})
				}
			}
		}
		return true
	})
	if d.Message == "" {
		d.Message = str
	}
	if d.Message == "" {
		d.Message = top
	}
	if d.Code == "" && hasCode {
		// Azure sometimes sends the code as a number.
		d.Code = raw
	}
	if d.Code == "content_filter" || inner == "ResponsibleAIPolicyViolation" {
		d.Code = "content_filter"
		if d.Param == "" {
			d.Param = "prompt"
		}
		if filter != "" {
			d.Message += " (filtered: " + filter + ")"
		}
	}
	return d
}

// The members ParseError has read: the first of a name wins.
const (
	seenTop = 1 << iota
	seenError
	seenMessage
	seenParam
	seenType
	seenCode
	seenInner
	seenInnerCode
	seenFilter
)

// once reports whether bit is not yet in seen, and sets it.
func once(seen *uint16, bit uint16) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// firstStr reads a string member the first time its name is met; a
// value of another kind reads as absent.
func firstStr(s *jsonscan.Scanner, seen *uint16, bit uint16, cur string) string {
	if once(seen, bit) && s.Peek() == jsonscan.String {
		return s.Str()
	}
	return cur
}

// filtered lists the categories a content_filter_result marks filtered,
// with their severity: "hate=high, violence=medium", sorted. The
// categories of an array, which Azure never sends, have no names.
func filtered(s *jsonscan.Scanner) string {
	var out []string
	category := func(name func() string) bool {
		if s.Peek() != jsonscan.Object {
			return true
		}
		var on bool
		var sev string
		var seen uint16
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "filtered":
				if once(&seen, 1) {
					on = truthy(s)
				}
			case "severity":
				sev = firstStr(s, &seen, 2, sev)
			}
			return true
		})
		if on {
			c := name()
			if sev != "" {
				c += "=" + sev
			}
			out = append(out, c)
		}
		return len(out) < 16
	}
	switch s.Peek() {
	case jsonscan.Object:
		s.Object(func(k []byte) bool { return category(func() string { return keyString(k) }) })
	case jsonscan.Array:
		s.Array(func(int) bool { return category(func() string { return "" }) })
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// truthy reads a flag as Azure's error reader always has: true, a
// non-zero number or a string such as "true" or "1".
func truthy(s *jsonscan.Scanner) bool {
	switch s.Peek() {
	case jsonscan.Bool:
		return s.Bool()
	case jsonscan.Number:
		return s.Float() != 0
	case jsonscan.String:
		b, _ := strconv.ParseBool(strings.ToLower(s.Str()))
		return b
	}
	return false
}

// keyString returns a key the scanner handed over with its escapes in
// place, unescaped.
func keyString(k []byte) string {
	if bytes.IndexByte(k, '\\') < 0 {
		return string(k)
	}
	q := make([]byte, 0, len(k)+2)
	q = append(append(append(q, '"'), k...), '"')
	return strings.Clone(jsonscan.New(q).Str())
}
