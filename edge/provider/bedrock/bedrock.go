// Package bedrock is the adapter for AWS Bedrock's Converse and
// ConverseStream APIs: one request shape for every model Bedrock hosts
// (Claude, Llama, Mistral, Nova, ...).
//
// Canonical chat requests are translated into Converse bodies; answers,
// plain JSON or ConverseStream's binary event stream (decoded by the AWS
// SDK's eventstream package), come back as canonical completions and
// chunks. Every request is signed with SigV4 by the AWS SDK's signer,
// with credentials from the SDK's standard chain (environment, shared
// config and credentials files, web identity, ECS and EC2 roles), never
// a hand-made signature. Only chat translates: embeddings and legacy
// completions are refused.
//
// Neither credentials nor signatures ever go into a message; messages
// built here may reach a client.
package bedrock

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
)

// signingName is the service name SigV4 signs Bedrock runtime calls for.
const signingName = "bedrock"

// Adapter talks to one Bedrock provider: one region, one credential
// chain.
type Adapter struct {
	up     upstream.Provider
	region string
	creds  aws.CredentialsProvider
	signer *v4.Signer
}

// New returns an adapter for p, of kind bedrock. p must have passed
// table validation. The credential chain is set up here but asked for
// credentials only when a request is signed, and caches them until
// they expire.
func New(p table.Provider) (*Adapter, error) {
	region := p.CloudRegionOf()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region))
	if err != nil {
		return nil, fmt.Errorf("provider %q: AWS configuration: %w", p.ID, err)
	}
	return newAdapter(p, region, cfg.Credentials), nil
}

// NewWithCredentials returns an adapter signing with creds instead of
// the standard chain: for tests and benchmarks.
func NewWithCredentials(p table.Provider, creds aws.CredentialsProvider) *Adapter {
	return newAdapter(p, p.CloudRegionOf(), creds)
}

func newAdapter(p table.Provider, region string, creds aws.CredentialsProvider) *Adapter {
	a := &Adapter{region: region, creds: creds, signer: v4.NewSigner()}
	p.APIKey = "" // Bedrock takes signatures, not keys
	a.up = upstream.NewProvider(p, upstream.Style{StreamAccept: "application/vnd.amazon.eventstream",
		ParseError: ParseError, Sign: a.sign})
	return a
}

// Close releases idle connections.
func (a *Adapter) Close() { a.up.Close() }

// sign signs req with SigV4 over its body's SHA-256.
func (a *Adapter) sign(ctx context.Context, req *http.Request, body []byte) error {
	if a.creds == nil {
		return fmt.Errorf("no AWS credentials provider")
	}
	creds, err := a.creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("AWS credentials: %w", err)
	}
	sum := sha256.Sum256(body)
	return a.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), signingName, a.region, time.Now())
}

// endpoint is the URL of Converse or ConverseStream for model. The model
// ID (or ARN) is one path segment, escaped as the AWS SDK escapes it.
func (a *Adapter) endpoint(model string, stream bool) string {
	m := strings.ReplaceAll(url.PathEscape(model), ":", "%3A")
	if stream {
		return a.up.Base() + "/model/" + m + "/converse-stream"
	}
	return a.up.Base() + "/model/" + m + "/converse"
}

// Do implements provider.Provider.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	if req.Op != llm.OpChat {
		return nil, upstream.Unsupported(a.up.ID(), req.Op)
	}
	chat, err := req.ChatRequest()
	if err != nil {
		return nil, err
	}
	model := req.UpstreamModel(upstreamModel)
	if model == "" {
		return nil, invalid("model", "no model to ask the upstream for")
	}
	payload, err := encodeRequest(chat, len(req.Body))
	if err != nil {
		return nil, err
	}
	call, err := a.up.Send(ctx, req, req.Stream, a.endpoint(model, req.Stream), payload)
	if err != nil {
		return nil, err
	}
	id := completionID(call.Resp.Header.Get("X-Amzn-Requestid"))
	created := time.Now().Unix()
	if req.Stream {
		return &llm.Response{Stream: newStream(a.up.ID(), call, call.Resp.Body, id, model, created), Upstream: call.Since()}, nil
	}
	b, err := a.up.ReadAll(call)
	if err != nil {
		return nil, err
	}
	cc, err := decodeResponse(a.up.ID(), b, id, model, created)
	if err != nil {
		return nil, err
	}
	return &llm.Response{Completion: cc, Usage: *cc.Usage, Upstream: call.Since()}, nil
}

// completionID names a completion after Bedrock's request ID, or at
// random when there is none.
func completionID(requestID string) string {
	if requestID == "" || len(requestID) > 64 {
		var b [12]byte
		rand.Read(b[:])
		requestID = hex.EncodeToString(b[:])
	}
	return "chatcmpl-" + requestID
}

// ParseError reads a Bedrock error body, {"message":"…"} (some
// services spell it "Message"). The exception's name travels in the
// X-Amzn-ErrorType header, but the status says enough:
// ThrottlingException and ModelNotReadyException are 429s, which
// upstream.StatusError makes a retryable 429.
//
// It reads what it can of a body that is not JSON, and keeps no pointer
// into b.
func ParseError(b []byte) upstream.ErrorDetail {
	var lower, upper string
	s := jsonscan.New(b)
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "message":
				lower, _ = checkedStr(s)
			case "Message":
				upper, _ = checkedStr(s)
			}
			return true
		})
	}
	if lower == "" {
		lower = upper
	}
	return upstream.ErrorDetail{Message: strings.Clone(lower)}
}

// exception maps an exception event met mid-stream. started says the
// client already has chunks, so nothing may be retried.
func exception(provider, typ, msg string, started bool) *llm.Error {
	if msg == "" {
		msg = "unknown error"
	}
	switch strings.ToLower(strings.TrimSuffix(typ, "Exception")) {
	case "throttling", "modelnotready":
		return &llm.Error{Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: "rate_limit_exceeded",
			Message: "upstream provider " + provider + " is rate limiting requests", Retryable: !started}
	case "serviceunavailable":
		return &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded,
			Message: "upstream provider " + provider + " is overloaded", Retryable: !started}
	case "validation":
		return &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: msg}
	}
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Code: typ, Retryable: !started,
		Message: "upstream provider " + provider + " reported an error: " + msg}
}
