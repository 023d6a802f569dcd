package providermock

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Kind "bedrock" speaks AWS Bedrock's runtime Converse API:
//
//	POST /model/{modelId}/converse          one ConverseResponse
//	POST /model/{modelId}/converse-stream   application/vnd.amazon.eventstream frames:
//	                                        messageStart, contentBlockStart (tool use),
//	                                        contentBlockDelta, contentBlockStop,
//	                                        messageStop, metadata
//
// When Config.AWS is set, every request's SigV4 signature is recomputed
// with the AWS SDK's signer over the request as received and compared
// with the one sent (403 InvalidSignatureException when they differ,
// 403 MissingAuthenticationTokenException without one, 403 when the
// credential scope names another region or service). Bodies are checked
// as Bedrock does: messages must start with a user turn and alternate,
// unknown top-level fields are a 400 ValidationException. status=429 is
// ThrottlingException; error_after=N sends a throttlingException event
// after N deltas and ends the stream. Errors carry X-Amzn-ErrorType.

// AWSCredentials is what the bedrock mock verifies signatures with.
type AWSCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	// Region is the region signatures must be scoped to.
	Region string
}

var bedrockFields = map[string]bool{"messages": true, "system": true, "inferenceConfig": true, "toolConfig": true,
	"guardrailConfig": true, "additionalModelRequestFields": true, "additionalModelResponseFieldPaths": true,
	"promptVariables": true, "requestMetadata": true, "performanceConfig": true}

func (rq *request) bedrockError(status int, typ, msg string) {
	rq.w.Header()["X-Amzn-Errortype"] = []string{typ + ":http://internal.amazon.com/coral/com.amazon.bedrock/"}
	b, _ := json.Marshal(map[string]string{"message": msg})
	rq.writeJSON(status, b)
}

func (s *Server) serveBedrock(rq *request) {
	rest, ok := strings.CutPrefix(rq.r.URL.Path, "/model/")
	i := strings.LastIndexByte(rest, '/')
	if !ok || i <= 0 || rq.r.Method != http.MethodPost {
		rq.bedrockError(http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	model, op := rest[:i], rest[i+1:]
	if op != "converse" && op != "converse-stream" {
		rq.bedrockError(http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	if rq.bodyErr != nil {
		rq.cancel()
		return
	}
	if !rq.bedrockAuth() {
		return
	}
	var req struct {
		Messages []struct {
			Role    string            `json:"role"`
			Content []json.RawMessage `json:"content"`
		} `json:"messages"`
		ToolConfig *struct {
			Tools []struct {
				ToolSpec struct {
					Name string `json:"name"`
				} `json:"toolSpec"`
			} `json:"tools"`
		} `json:"toolConfig"`
		InferenceConfig struct {
			MaxTokens *int `json:"maxTokens"`
		} `json:"inferenceConfig"`
	}
	if err := json.Unmarshal(rq.body, &req); err != nil {
		rq.bedrockError(http.StatusBadRequest, "ValidationException", "Malformed input request, please reformat your input and try again.")
		return
	}
	if bad := bedrockExtraKey(rq.body); bad != "" {
		rq.bedrockError(http.StatusBadRequest, "ValidationException", "Malformed input request: extraneous key ["+bad+"] is not permitted, please reformat your input and try again.")
		return
	}
	if len(req.Messages) == 0 {
		rq.bedrockError(http.StatusBadRequest, "ValidationException", "A conversation must start with a user message. Try again with a conversation that starts with a user message.")
		return
	}
	for j, m := range req.Messages {
		want := "user"
		if j%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			rq.bedrockError(http.StatusBadRequest, "ValidationException", "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.")
			return
		}
		if len(m.Content) == 0 {
			rq.bedrockError(http.StatusBadRequest, "ValidationException", "The content field in the Message object at messages."+strconv.Itoa(j)+" is empty. Add a ContentBlock object to the content field and try again.")
			return
		}
	}
	d := s.baseDirectives()
	d.applyModel(model)
	last := req.Messages[len(req.Messages)-1]
	var text strings.Builder
	for _, c := range last.Content {
		if t, ok := blockText(c); ok {
			text.WriteString(t)
			text.WriteByte(' ')
		}
	}
	if err := d.parse(text.String()); err != nil {
		rq.bedrockError(http.StatusBadRequest, "ValidationException", err.Error())
		return
	}
	if !rq.admit(&d, func(status int) { rq.bedrockStatus(status, &d) }) {
		return
	}
	tool := ""
	if d.toolCall != "" {
		if req.ToolConfig != nil {
			for _, t := range req.ToolConfig.Tools {
				if t.ToolSpec.Name == d.toolCall {
					tool = t.ToolSpec.Name
				}
			}
		}
		if tool == "" {
			rq.bedrockError(http.StatusBadRequest, "ValidationException", "tool_call names a tool the request does not declare")
			return
		}
	}
	chunks := d.chunks
	if mt := req.InferenceConfig.MaxTokens; mt != nil && *mt < chunks {
		chunks = *mt
	}
	inTokens := countWords(string(rq.body)) / 4
	if op == "converse" {
		rq.bedrockConverse(chunks, inTokens, tool, &d)
		return
	}
	rq.bedrockStream(chunks, inTokens, tool, &d)
}

// bedrockExtraKey returns the first top-level key of body, a valid JSON
// document, that Converse does not take, or "".
func bedrockExtraKey(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ""
		}
		if k, _ := t.(string); !bedrockFields[k] {
			return k
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

// blockText returns a content block's text, if it has a string one.
func blockText(block []byte) (string, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(block, &fields) != nil {
		return "", false
	}
	var t string
	raw := fields["text"]
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &t) != nil {
		return "", false
	}
	return t, true
}

// bedrockStatus answers a status directive with Bedrock's exception.
func (rq *request) bedrockStatus(status int, d *directives) {
	rq.setRetryAfter(d, status)
	switch status {
	case http.StatusTooManyRequests:
		rq.bedrockError(status, "ThrottlingException", "Too many requests, please wait before trying again.")
	case http.StatusBadRequest:
		rq.bedrockError(status, "ValidationException", "mock validation error")
	case http.StatusForbidden, http.StatusUnauthorized:
		rq.bedrockError(status, "AccessDeniedException", "You don't have access to the model with the specified model ID.")
	case http.StatusNotFound:
		rq.bedrockError(status, "ResourceNotFoundException", "The provided model identifier is invalid.")
	case http.StatusServiceUnavailable:
		rq.bedrockError(status, "ServiceUnavailableException", "Bedrock is unable to process your request.")
	default:
		rq.bedrockError(status, "InternalServerException", "The server encountered an internal error.")
	}
}

// bedrockAuth recomputes the request's SigV4 signature with the SDK's
// signer and compares it with the one the request carries.
func (rq *request) bedrockAuth() bool {
	c := rq.s.cfg.AWS
	if c == nil {
		return true
	}
	auth := rq.r.Header.Get("Authorization")
	if auth == "" {
		rq.bedrockError(http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return false
	}
	// AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[0] != c.AccessKeyID {
		rq.bedrockError(http.StatusForbidden, "UnrecognizedClientException", "The security token included in the request is invalid.")
		return false
	}
	if scope[2] != c.Region || scope[3] != "bedrock" {
		rq.bedrockError(http.StatusForbidden, "InvalidSignatureException", "Credential should be scoped to a valid region and to service 'bedrock'.")
		return false
	}
	when, err := time.Parse("20060102T150405Z", rq.r.Header.Get("X-Amz-Date"))
	if err != nil || time.Since(when).Abs() > 5*time.Minute {
		rq.bedrockError(http.StatusForbidden, "InvalidSignatureException", "Signature expired or X-Amz-Date missing.")
		return false
	}
	// The request as received, with only the headers it says it signed.
	clone, err := http.NewRequest(rq.r.Method, "http://"+rq.r.Host+rq.r.URL.RequestURI(), bytes.NewReader(rq.body))
	if err != nil {
		rq.bedrockError(http.StatusForbidden, "InvalidSignatureException", "unreadable request")
		return false
	}
	clone.URL.RawPath = rq.r.URL.RawPath
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host", "content-length":
			continue
		}
		if v, ok := rq.r.Header[http.CanonicalHeaderKey(h)]; ok {
			clone.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	sum := sha256.Sum256(rq.body)
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if err := v4.NewSigner().SignHTTP(rq.ctx, creds, clone, hex.EncodeToString(sum[:]), "bedrock", c.Region, when); err != nil {
		rq.bedrockError(http.StatusForbidden, "InvalidSignatureException", "unsignable request")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(clone.Header.Get("Authorization")), []byte(auth)) != 1 {
		rq.bedrockError(http.StatusForbidden, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
		return false
	}
	return true
}

func (rq *request) bedrockConverse(chunks, inTokens int, tool string, d *directives) {
	b := rq.buffer()
	b = append(b, `{"output":{"message":{"role":"assistant","content":[`...)
	stop, out := "end_turn", chunks
	if tool != "" {
		b = append(b, `{"toolUse":{"toolUseId":"tooluse_`...)
		b = append(b, rq.s.newID("")...)
		b = append(b, `","name":`...)
		b = appendJSONString(b, tool)
		b = append(b, `,"input":`...)
		b = append(b, ToolArguments...)
		b = append(b, `}}`...)
		stop, out = "tool_use", len(toolFragments)
	} else {
		b = append(b, `{"text":`...)
		b = appendJSONString(b, Content(chunks))
		b = append(b, '}')
	}
	b = append(b, `]}},"stopReason":"`...)
	b = append(b, stop...)
	b = append(b, `","usage":{"inputTokens":`...)
	b = strconv.AppendInt(b, int64(inTokens), 10)
	b = append(b, `,"outputTokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	b = append(b, `,"totalTokens":`...)
	b = strconv.AppendInt(b, int64(inTokens+out), 10)
	b = append(b, `},"metrics":{"latencyMs":1}}`...)
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

var hdrEventStream = []string{"application/vnd.amazon.eventstream"}

// bedrockStream writes ConverseStream's frames with the SDK's encoder.
func (rq *request) bedrockStream(chunks, inTokens int, tool string, d *directives) {
	rq.startStreamAs(hdrEventStream)
	enc := eventstream.NewEncoder()
	var frame bytes.Buffer
	send := func(event string, payload []byte) bool {
		frame.Reset()
		msg := eventstream.Message{Payload: payload}
		msg.Headers.Set(":event-type", eventstream.StringValue(event))
		msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
		msg.Headers.Set(":message-type", eventstream.StringValue("event"))
		if err := enc.Encode(&frame, msg); err != nil {
			return false
		}
		return rq.send(frame.Bytes())
	}
	// Real frames carry a "p" field of padding, which clients ignore.
	if !send("messageStart", []byte(`{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW","role":"assistant"}`)) {
		return
	}
	stop, out := "end_turn", chunks
	if tool != "" {
		stop, out = "tool_use", len(toolFragments)
		start := []byte(`{"contentBlockIndex":0,"p":"abcd","start":{"toolUse":{"name":`)
		start = appendJSONString(start, tool)
		start = append(start, `,"toolUseId":"tooluse_`...)
		start = append(start, rq.s.newID("")...)
		start = append(start, `"}}}`...)
		if !send("contentBlockStart", start) {
			return
		}
	}
	for i := 0; i < out; i++ {
		if i > 0 && !rq.wait(d.chunkDelay) {
			return
		}
		if i == 1 && !rq.wait(d.silent) {
			return
		}
		if d.cutAfter >= 0 && i == d.cutAfter {
			rq.abort()
		}
		if d.errorAfter >= 0 && i == d.errorAfter {
			frame.Reset()
			msg := eventstream.Message{Payload: []byte(`{"message":"Too many requests, please wait before trying again."}`)}
			msg.Headers.Set(":exception-type", eventstream.StringValue("throttlingException"))
			msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
			msg.Headers.Set(":message-type", eventstream.StringValue("exception"))
			if enc.Encode(&frame, msg) == nil {
				rq.send(frame.Bytes())
			}
			return
		}
		p := []byte(`{"contentBlockIndex":0,"delta":{`)
		if tool != "" {
			p = append(p, `"toolUse":{"input":`...)
			p = appendJSONString(p, toolFragments[i])
			p = append(p, '}')
		} else {
			p = append(p, `"text":`...)
			p = appendJSONString(p, piece(i))
		}
		p = append(p, `},"p":"abcdefgh"}`...)
		if !send("contentBlockDelta", p) {
			return
		}
	}
	if !send("contentBlockStop", []byte(`{"contentBlockIndex":0,"p":"abcd"}`)) {
		return
	}
	if !send("messageStop", []byte(`{"p":"abcdef","stopReason":"`+stop+`"}`)) {
		return
	}
	send("metadata", []byte(`{"metrics":{"latencyMs":1},"p":"ab","usage":{"inputTokens":`+strconv.Itoa(inTokens)+
		`,"outputTokens":`+strconv.Itoa(out)+`,"totalTokens":`+strconv.Itoa(inTokens+out)+`}}`))
}
