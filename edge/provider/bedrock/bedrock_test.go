package bedrock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

var update = flag.Bool("update", false, "rewrite golden files")

var testCreds = &providermock.AWSCredentials{AccessKeyID: "AKIDMERIDIANTEST", SecretAccessKey: "bedrock-test-secret", SessionToken: "session-token", Region: "us-east-1"}

func mock(t *testing.T) (*providermock.Server, table.Provider) {
	t.Helper()
	s, err := providermock.New(providermock.Config{Kind: providermock.KindBedrock, AWS: testCreds, Chunks: 5})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, table.Provider{ID: "bed", Kind: table.KindBedrock, BaseURL: base, Region: "us", CloudRegion: "us-east-1"}
}

func static(secret string) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(testCreds.AccessKeyID, secret, testCreds.SessionToken)
}

func chatReq(body string, stream bool) *llm.Request {
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: "anthropic.claude-3-5-haiku-20241022-v1:0", Stream: stream, Body: []byte(body)}
}

const hello = `{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}`

func TestConverseSigned(t *testing.T) {
	s, p := mock(t)
	a := NewWithCredentials(p, static(testCreds.SecretAccessKey))
	defer a.Close()
	resp, err := a.Do(context.Background(), chatReq(hello, false), "")
	if err != nil {
		t.Fatal(err)
	}
	c := resp.Completion
	if got := *c.Choices[0].Message.Content; got != providermock.Content(5) || c.Choices[0].FinishReason != llm.FinishStop {
		t.Fatalf("answer %q %q", got, c.Choices[0].FinishReason)
	}
	if resp.Usage.CompletionTokens != 5 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+5 {
		t.Fatalf("usage %+v", resp.Usage)
	}
	r := s.Requests()[0]
	if r.Path != "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse" || !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDMERIDIANTEST/") {
		t.Fatalf("request %s %q", r.Path, r.Header.Get("Authorization"))
	}
	if r.Header.Get("X-Amz-Security-Token") != "session-token" {
		t.Fatal("the session token was not sent")
	}
}

func TestWrongSecretIsRefusedByTheMock(t *testing.T) {
	_, p := mock(t)
	a := NewWithCredentials(p, static("not-the-secret"))
	defer a.Close()
	_, err := a.Do(context.Background(), chatReq(hello, false), "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || !e.Retryable || !strings.Contains(e.Message, "credentials") {
		t.Fatalf("err %v", err)
	}
	if strings.Contains(e.Message, "not-the-secret") {
		t.Fatal("the secret reached the message")
	}
}

func TestStandardCredentialChain(t *testing.T) {
	_, p := mock(t)
	t.Setenv("AWS_ACCESS_KEY_ID", testCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testCreds.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", testCreds.SessionToken)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	a, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Do(context.Background(), chatReq(hello, false), ""); err != nil {
		t.Fatal(err)
	}
}

func TestWrongRegionIsRefused(t *testing.T) {
	_, p := mock(t)
	p.CloudRegion = "eu-west-1"
	a := NewWithCredentials(p, static(testCreds.SecretAccessKey))
	defer a.Close()
	if _, err := a.Do(context.Background(), chatReq(hello, false), ""); err == nil {
		t.Fatal("a signature scoped to another region was accepted")
	}
}

func collect(t *testing.T, st llm.Stream) (text, args, finish string, calls []llm.ToolCallDelta, u llm.Usage, err error) {
	t.Helper()
	defer st.Close()
	for {
		c, err := st.Next()
		if err == io.EOF {
			u, _ = st.Usage()
			return text, args, finish, calls, u, nil
		}
		if err != nil {
			return text, args, finish, calls, u, err
		}
		for _, ch := range c.Choices {
			text += strings.Clone(ch.Content) // chunk strings live until the next call
			if ch.FinishReason != "" {
				finish = ch.FinishReason
			}
			for _, tc := range ch.ToolCalls {
				args += strings.Clone(tc.Arguments)
				if tc.Name != "" {
					calls = append(calls, tc)
				}
			}
		}
	}
}

func TestConverseStream(t *testing.T) {
	_, p := mock(t)
	a := NewWithCredentials(p, static(testCreds.SecretAccessKey))
	defer a.Close()
	resp, err := a.Do(context.Background(), chatReq(hello, true), "")
	if err != nil {
		t.Fatal(err)
	}
	text, _, finish, _, u, err := collect(t, resp.Stream)
	if err != nil || text != providermock.Content(5) || finish != llm.FinishStop || u.CompletionTokens != 5 {
		t.Fatalf("stream %q %q %+v %v", text, finish, u, err)
	}
}

const toolReq = `{"model":"m","messages":[{"role":"user","content":"weather? #mock tool_call=get_weather"}],
 "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}}]}`

func TestToolCalls(t *testing.T) {
	_, p := mock(t)
	a := NewWithCredentials(p, static(testCreds.SecretAccessKey))
	defer a.Close()
	resp, err := a.Do(context.Background(), chatReq(toolReq, false), "")
	if err != nil {
		t.Fatal(err)
	}
	ch := resp.Completion.Choices[0]
	if ch.FinishReason != llm.FinishToolCalls || len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Arguments != providermock.ToolArguments {
		t.Fatalf("plain %+v", ch)
	}
	resp, err = a.Do(context.Background(), chatReq(toolReq, true), "")
	if err != nil {
		t.Fatal(err)
	}
	_, args, finish, calls, _, err := collect(t, resp.Stream)
	if err != nil || args != providermock.ToolArguments || finish != llm.FinishToolCalls || len(calls) != 1 || calls[0].Name != "get_weather" || calls[0].ID == "" {
		t.Fatalf("stream %q %q %+v %v", args, finish, calls, err)
	}
	// The round trip: the call and its result go back to the model.
	round := `{"model":"m","messages":[{"role":"user","content":"weather?"},
	 {"role":"assistant","content":null,"tool_calls":[{"id":"tooluse_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]},
	 {"role":"tool","tool_call_id":"tooluse_1","content":"sunny"},{"role":"user","content":"thanks"}],
	 "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`
	if _, err := a.Do(context.Background(), chatReq(round, false), ""); err != nil {
		t.Fatal(err)
	}
}

func TestThrottling(t *testing.T) {
	_, p := mock(t)
	a := NewWithCredentials(p, static(testCreds.SecretAccessKey))
	defer a.Close()
	_, err := a.Do(context.Background(), chatReq(`{"model":"m","messages":[{"role":"user","content":"x #mock status=429 retry_after=3"}]}`, false), "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests || !e.Retryable || e.RetryAfter.Seconds() != 3 {
		t.Fatalf("err %v", err)
	}
	resp, err := a.Do(context.Background(), chatReq(`{"model":"m","messages":[{"role":"user","content":"x #mock error_after=2"}]}`, true), "")
	if err != nil {
		t.Fatal(err)
	}
	text, _, _, _, _, err := collect(t, resp.Stream)
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests || text != providermock.Content(2) {
		t.Fatalf("mid-stream %q %v", text, err)
	}
}

func TestValidationErrorReachesTheClient(t *testing.T) {
	_, p := mock(t)
	a := NewWithCredentials(p, static(testCreds.SecretAccessKey))
	defer a.Close()
	_, err := a.Do(context.Background(), chatReq(`{"model":"m","messages":[{"role":"user","content":"x #mock status=400"}]}`, false), "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Message != "mock validation error" {
		t.Fatalf("err %v", err)
	}
}

func golden(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		var buf bytes.Buffer
		json.Indent(&buf, got, "", "  ")
		os.WriteFile(path, append(buf.Bytes(), '\n'), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(want, &w) != nil {
		t.Fatalf("%s: not JSON:\n%s", name, got)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("%s differs\n got: %s\nwant: %s", name, gb, wb)
	}
}

func TestGoldenRequest(t *testing.T) {
	in, err := os.ReadFile("testdata/chat_request.json")
	if err != nil {
		t.Fatal(err)
	}
	req := chatReq(string(in), false)
	chat, err := req.ChatRequest()
	if err != nil {
		t.Fatal(err)
	}
	out, err := encodeRequest(chat, len(in))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "chat_request.converse.json", out)
}

func TestGoldenResponse(t *testing.T) {
	in, err := os.ReadFile("testdata/chat_response.converse.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeResponse("bed", in, "chatcmpl-1", "m", 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(c)
	golden(t, "chat_response.want.json", out)
}

func TestBadRequestsAreRefusedBeforeSending(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}`,
		`{"model":"m","messages":[{"role":"tool","content":"x"}]}`,
		`{"model":"m","messages":[{"role":"system","content":"only a system prompt"}]}`,
		`{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}`,
	} {
		chat, err := chatReq(body, false).ChatRequest()
		if err != nil {
			continue // refused even earlier
		}
		_, err = encodeRequest(chat, 0)
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
			t.Errorf("%s: %v", body, err)
		}
	}
}
