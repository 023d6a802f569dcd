package node

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// cloudAWS is the credential the Bedrock mock verifies SigV4 signatures
// with; the edge finds it through the AWS SDK's standard chain (its
// environment variables).
var cloudAWS = &providermock.AWSCredentials{AccessKeyID: "AKIDEDGETEST", SecretAccessKey: "edge-test-secret", Region: "us-east-1"}

// cloudTokens is one OAuth token server for every test's Vertex mock:
// its service account key takes a while to generate.
var cloudTokens = sync.OnceValues(func() (*providermock.TokenServer, error) {
	ts, err := providermock.NewTokenServer()
	if err != nil {
		return nil, err
	}
	_, err = ts.Start("127.0.0.1:0")
	return ts, err
})

type cloudMocks struct {
	azure, bedrock, vertex string
	// credentials is the Vertex service account's credentials JSON.
	credentials string
}

// startCloudMocks starts an Azure OpenAI, a Bedrock and a Vertex AI mock,
// each checking credentials as its cloud does, for the cross-format
// matrix.
func startCloudMocks(t testing.TB) cloudMocks {
	t.Helper()
	ts, err := cloudTokens()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", cloudAWS.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", cloudAWS.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	start := func(cfg providermock.Config) string {
		cfg.Chunks = 16
		s, err := providermock.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		base, err := s.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return base
	}
	return cloudMocks{
		azure:       start(providermock.Config{Kind: providermock.KindAzure, APIKey: mockKey}),
		bedrock:     start(providermock.Config{Kind: providermock.KindBedrock, AWS: cloudAWS}),
		vertex:      start(providermock.Config{Kind: providermock.KindVertex, Tokens: ts, Project: "mock-project", Location: "us-central1"}),
		credentials: string(ts.CredentialsJSON()),
	}
}
