package providermock

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind "vertex" speaks Google Vertex AI for two publishers:
//
//	POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent
//	POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:streamGenerateContent   (?alt=sse)
//	POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict
//	POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:streamRawPredict
//
// Google's models answer as kind gemini does; Anthropic's as kind
// anthropic does, once the body passed Vertex's own rules: the model is
// in the URL, and the body must carry anthropic_version
// "vertex-2023-10-16" (and no model). Requests need a Bearer token that
// Config.Tokens issued and that has not expired (401 UNAUTHENTICATED in
// Google's shape otherwise). A project or location other than Config's
// is 404.

// VertexAnthropicVersion is the anthropic_version Vertex AI requires.
const VertexAnthropicVersion = "vertex-2023-10-16"

func (s *Server) serveVertex(rq *request) {
	p := strings.Split(strings.TrimPrefix(rq.r.URL.Path, "/v1/"), "/")
	// projects/{p}/locations/{l}/publishers/{pub}/models/{m}:{action}
	if len(p) != 8 || p[0] != "projects" || p[2] != "locations" || p[4] != "publishers" || p[6] != "models" ||
		(s.cfg.Project != "" && p[1] != s.cfg.Project) || (s.cfg.Location != "" && p[3] != s.cfg.Location) {
		rq.geminiError(http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.")
		return
	}
	if rq.r.Method != http.MethodPost {
		rq.geminiError(http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "Method not allowed")
		return
	}
	if t := s.cfg.Tokens; t != nil {
		tok, ok := strings.CutPrefix(rq.r.Header.Get("Authorization"), "Bearer ")
		if !ok || !t.Valid(tok) {
			rq.geminiError(http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
			return
		}
	}
	if rq.bodyErr != nil {
		rq.cancel()
		return
	}
	model, action, _ := strings.Cut(p[7], ":")
	switch p[5] + ":" + action {
	case "google:generateContent":
		s.geminiGenerate(rq, model, "")
	case "google:streamGenerateContent":
		mode := "json"
		if rq.r.URL.Query().Get("alt") == "sse" {
			mode = "sse"
		}
		s.geminiGenerate(rq, model, mode)
	case "anthropic:rawPredict", "anthropic:streamRawPredict":
		var top map[string]json.RawMessage // nil unless the body is an object
		json.Unmarshal(rq.body, &top)
		if jsonString(top["anthropic_version"]) != VertexAnthropicVersion {
			rq.geminiError(http.StatusBadRequest, "INVALID_ARGUMENT", `anthropic_version: must be "`+VertexAnthropicVersion+`"`)
			return
		}
		if _, ok := top["model"]; ok {
			rq.geminiError(http.StatusBadRequest, "INVALID_ARGUMENT", "model: Extra inputs are not permitted")
			return
		}
		if streamed := jsonTruthy(top["stream"]); streamed != (action == "streamRawPredict") {
			rq.geminiError(http.StatusBadRequest, "INVALID_ARGUMENT", "stream must be true for streamRawPredict, and absent or false for rawPredict")
			return
		}
		// From here on it is Anthropic's Messages API.
		rq.body = vertexToAnthropic(rq.body, model)
		rq.r.Header.Set("Anthropic-Version", "2023-06-01")
		s.anthropicMessages(rq)
	default:
		rq.geminiError(http.StatusNotFound, "NOT_FOUND", "Method not found.")
	}
}

// jsonString returns raw's string, or "" when it is not a JSON string.
func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// jsonTruthy reads raw as a flag, leniently: true, a string that says
// true, or a number other than 0.
func jsonTruthy(raw json.RawMessage) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch v := v.(type) {
	case bool:
		return v
	case string:
		b, _ := strconv.ParseBool(strings.ToLower(v))
		return b
	case float64:
		return v != 0
	}
	return false
}

// jsonInt reads raw as an integer, leniently: a number (truncated) or a
// string holding one; anything else is 0.
func jsonInt(raw json.RawMessage) int64 {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return 0
	}
	switch v := v.(type) {
	case float64:
		return int64(v)
	case string:
		f, _ := strconv.ParseFloat(v, 64)
		return int64(f)
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

// vertexToAnthropic turns a Vertex rawPredict body, a JSON object, into
// an Anthropic Messages body: anthropic_version goes and model (which the
// body lacks) is added. The test kit may not import the edge's JSON
// reader, and the Anthropic mock reads the body whatever its order, so
// encoding/json's sorted members do.
func vertexToAnthropic(body []byte, model string) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return body // not an object: the Anthropic mock answers for it
	}
	delete(top, "anthropic_version")
	top["model"], _ = json.Marshal(model)
	out, err := json.Marshal(top)
	if err != nil {
		return body
	}
	return out
}

// TokenServer is a stand-in for Google's OAuth token endpoint: it
// issues access tokens for JWT assertions signed by its own service
// account's key (the signature, issuer, audience and expiry are
// checked), and tells a Vertex mock which tokens are valid.
type TokenServer struct {
	// TTL is how long issued tokens live; zero means an hour. Set it
	// before the first request.
	TTL time.Duration

	key   *rsa.PrivateKey
	email string
	url   string
	srv   *http.Server

	mu     sync.Mutex
	tokens map[string]time.Time
	issued int
}

// NewTokenServer returns a token server with a fresh service account
// key; Start serves it.
func NewTokenServer() (*TokenServer, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &TokenServer{key: k, email: "meridian-test@mock-project.iam.gserviceaccount.com", tokens: map[string]time.Time{}}, nil
}

// Start serves POST /token on addr and returns the base URL.
func (t *TokenServer) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	t.url = "http://" + ln.Addr().String()
	t.srv = &http.Server{Handler: http.HandlerFunc(t.serve), ReadHeaderTimeout: 30 * time.Second}
	go t.srv.Serve(ln)
	return t.url, nil
}

// Close stops the server.
func (t *TokenServer) Close() error {
	if t.srv == nil {
		return nil
	}
	return t.srv.Close()
}

// TokenURL is the token endpoint credentials name in token_uri.
func (t *TokenServer) TokenURL() string { return t.url + "/token" }

// CredentialsJSON is a service account key file whose token_uri is
// this server's.
func (t *TokenServer) CredentialsJSON() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(t.key)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "mock-project", "private_key_id": "mock-key-1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": t.email, "client_id": "1", "token_uri": t.TokenURL(),
	})
	return b
}

// Valid reports whether tok was issued here and has not expired.
func (t *TokenServer) Valid(tok string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, ok := t.tokens[tok]
	return ok && time.Now().Before(exp)
}

// Issued counts the tokens issued so far.
func (t *TokenServer) Issued() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.issued
}

// Expire makes every token issued so far invalid, as if its hour passed.
func (t *TokenServer) Expire() {
	t.mu.Lock()
	clear(t.tokens)
	t.mu.Unlock()
}

func (t *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
		w.Write(b)
	}
	if r.URL.Path != "/token" || r.Method != http.MethodPost {
		fail(http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail(http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type.")
		return
	}
	if err := t.verify(r.PostForm.Get("assertion")); err != nil {
		fail(http.StatusBadRequest, "invalid_grant", "Invalid JWT Signature: "+err.Error())
		return
	}
	ttl := t.TTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	var rb [16]byte
	rand.Read(rb[:])
	tok := "ya29.mock-" + hex.EncodeToString(rb[:])
	t.mu.Lock()
	t.tokens[tok] = time.Now().Add(ttl)
	t.issued++
	t.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"access_token":"` + tok + `","expires_in":` + strconv.Itoa(int(ttl.Seconds())) + `,"token_type":"Bearer"}`))
}

// verify checks an RS256 JWT assertion: signature by the account's key,
// issuer, audience (this endpoint), scope and time.
func (t *TokenServer) verify(assertion string) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return errors.New("bad signature encoding")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&t.key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("signature does not verify")
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return errors.New("bad claims encoding")
	}
	var c map[string]json.RawMessage // nil when the claims are not an object
	json.Unmarshal(claims, &c)
	now := time.Now().Unix()
	switch {
	case jsonString(c["iss"]) != t.email:
		return errors.New("wrong issuer")
	case jsonString(c["aud"]) != t.TokenURL():
		return errors.New("wrong audience")
	case !strings.Contains(jsonString(c["scope"]), "https://www.googleapis.com/auth/cloud-platform"):
		return errors.New("no cloud-platform scope")
	case jsonInt(c["exp"]) < now || jsonInt(c["iat"]) > now+60:
		return errors.New("expired or not yet valid")
	}
	return nil
}
