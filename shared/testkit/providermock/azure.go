package providermock

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Kind "azure" speaks Azure OpenAI: OpenAI's bodies and streams on
// deployment URLs,
//
//	POST /openai/deployments/{deployment}/chat/completions?api-version=…
//	POST /openai/deployments/{deployment}/completions?api-version=…
//	POST /openai/deployments/{deployment}/embeddings?api-version=…
//
// api-version is required (a 404 without it, as Azure answers). When
// Config.APIKey is set, the api-key header must carry it, or, when
// Config.BearerToken is set, Authorization must carry "Bearer" and it
// (a Microsoft Entra ID token); otherwise 401 in Azure's bare shape. The
// directive content_filter=1 answers 400 content_filter with Azure's
// innererror.content_filter_result, as a prompt the filter stops is.
// Everything else is kind openai's, directives included.

// azureContentFilter is Azure's answer to a prompt its content filter
// stops.
const azureContentFilter = `{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}`

func (s *Server) serveAzure(rq *request) {
	rest, ok := strings.CutPrefix(rq.r.URL.Path, "/openai/deployments/")
	dep, op, _ := strings.Cut(rest, "/")
	if !ok || dep == "" || rq.r.URL.Query().Get("api-version") == "" {
		rq.writeJSON(http.StatusNotFound, []byte(`{"error":{"code":"404","message":"Resource not found"}}`))
		return
	}
	if !rq.azureAuth() {
		return
	}
	if strings.Contains(string(rq.body), directiveToken+" content_filter=1") {
		rq.writeJSON(http.StatusBadRequest, []byte(azureContentFilter))
		return
	}
	switch op {
	case "chat/completions", "completions", "embeddings":
		rq.r.URL.Path = "/v1/" + op
		s.serveOpenAI(rq)
	default:
		rq.writeJSON(http.StatusNotFound, []byte(`{"error":{"code":"404","message":"Resource not found"}}`))
	}
}

// azureAuth enforces Config.APIKey (api-key) or Config.BearerToken.
func (rq *request) azureAuth() bool {
	cfg := rq.s.cfg
	if cfg.APIKey == "" && cfg.BearerToken == "" {
		return true
	}
	if got := rq.r.Header.Get("Api-Key"); got != "" && cfg.APIKey != "" {
		if subtle.ConstantTimeCompare([]byte(got), []byte(cfg.APIKey)) == 1 {
			return true
		}
	} else if tok, ok := strings.CutPrefix(rq.r.Header.Get("Authorization"), "Bearer "); ok && cfg.BearerToken != "" {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(cfg.BearerToken)) == 1 {
			return true
		}
	}
	rq.writeJSON(http.StatusUnauthorized, []byte(`{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}`))
	return false
}
