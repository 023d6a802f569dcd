package providermock_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/smithy-go"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// bedrockClient is AWS's own Bedrock runtime client pointed at a mock
// that verifies its SigV4 signatures: if the mock's framing, shapes or
// signature check were wrong, the SDK would say so.
func bedrockClient(t *testing.T, secret string) *bedrockruntime.Client {
	t.Helper()
	creds := &providermock.AWSCredentials{AccessKeyID: "AKIDMOCK", SecretAccessKey: "mock-secret", Region: "eu-west-1"}
	s, err := providermock.New(providermock.Config{Kind: providermock.KindBedrock, AWS: creds, Chunks: 6})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg := aws.Config{Region: creds.Region, Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, secret, "")}
	return bedrockruntime.NewFromConfig(cfg, func(o *bedrockruntime.Options) {
		o.BaseEndpoint = aws.String(base)
		o.RetryMaxAttempts = 1
	})
}

func userText(s string) []types.Message {
	return []types.Message{{Role: types.ConversationRoleUser, Content: []types.ContentBlock{&types.ContentBlockMemberText{Value: s}}}}
}

func TestBedrockMockSpeaksConverseToTheAWSSDK(t *testing.T) {
	c := bedrockClient(t, "mock-secret")
	ctx := context.Background()
	model := aws.String("anthropic.claude-3-5-haiku-20241022-v1:0")
	out, err := c.Converse(ctx, &bedrockruntime.ConverseInput{ModelId: model, Messages: userText("hi")})
	if err != nil {
		t.Fatal(err)
	}
	msg := out.Output.(*types.ConverseOutputMemberMessage).Value
	if got := msg.Content[0].(*types.ContentBlockMemberText).Value; got != providermock.Content(6) || out.StopReason != types.StopReasonEndTurn || *out.Usage.OutputTokens != 6 {
		t.Fatalf("converse: %q %s %+v", got, out.StopReason, out.Usage)
	}

	st, err := c.ConverseStream(ctx, &bedrockruntime.ConverseStreamInput{ModelId: model, Messages: userText("hi")})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var stop types.StopReason
	var usage *types.TokenUsage
	for ev := range st.GetStream().Events() {
		switch v := ev.(type) {
		case *types.ConverseStreamOutputMemberContentBlockDelta:
			text.WriteString(v.Value.Delta.(*types.ContentBlockDeltaMemberText).Value)
		case *types.ConverseStreamOutputMemberMessageStop:
			stop = v.Value.StopReason
		case *types.ConverseStreamOutputMemberMetadata:
			usage = v.Value.Usage
		}
	}
	if err := st.GetStream().Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != providermock.Content(6) || stop != types.StopReasonEndTurn || usage == nil || *usage.OutputTokens != 6 {
		t.Fatalf("stream: %q %s %+v", text.String(), stop, usage)
	}

	// Throttling, as the SDK types it.
	_, err = c.Converse(ctx, &bedrockruntime.ConverseInput{ModelId: model, Messages: userText("x #mock status=429")})
	var throttled *types.ThrottlingException
	if !errors.As(err, &throttled) {
		t.Fatalf("429: %v", err)
	}
	st, err = c.ConverseStream(ctx, &bedrockruntime.ConverseStreamInput{ModelId: model, Messages: userText("x #mock error_after=2")})
	if err != nil {
		t.Fatal(err)
	}
	for range st.GetStream().Events() {
	}
	if err := st.GetStream().Err(); !errors.As(err, &throttled) {
		t.Fatalf("mid-stream: %v", err)
	}
}

func TestBedrockMockRefusesABadSignature(t *testing.T) {
	c := bedrockClient(t, "wrong-secret")
	_, err := c.Converse(context.Background(), &bedrockruntime.ConverseInput{ModelId: aws.String("m"), Messages: userText("hi")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidSignatureException" {
		t.Fatalf("err %v", err)
	}
}

// TestBedrockMockChecksTheBody posts raw Converse bodies: the first key
// Converse does not take is named, and directives are read from the
// last turn's text blocks only.
func TestBedrockMockChecksTheBody(t *testing.T) {
	s, err := providermock.New(providermock.Config{Kind: providermock.KindBedrock, Chunks: 3})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, tc := range []struct {
		body, want string
		status     int
	}{
		{`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"zeta":1,"alpha":2}`, "extraneous key [zeta]", 400},
		{`{"messages":[{"role":"user","content":[{"image":{}},{"text":5},{"text":"#mock status=429"}]}]}`, "ThrottlingException", 429},
		{`{"messages":[{"role":"user","content":[{"text":"#mock status=429"}]},{"role":"assistant","content":[{"text":"ok"}]},{"role":"user","content":[{"text":"hi"}]}]}`, `"stopReason"`, 200},
		{`null`, "must start with a user message", 400},
	} {
		resp, err := http.Post(base+"/model/m/converse", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(b) + " " + resp.Header.Get("X-Amzn-Errortype")
		if resp.StatusCode != tc.status || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.body, resp.StatusCode, got, tc.status, tc.want)
		}
	}
}
