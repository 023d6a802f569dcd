package providermock

import (
	"testing"

	"github.com/meridian-mesh/meridian/shared/testkit/wanterr"
)

func TestConfigValidate(t *testing.T) {
	for kind, want := range map[string]string{
		"": "", KindOpenAI: "", KindAnthropic: "", KindGemini: "", KindOllama: "",
		"cohere": `unsupported kind "cohere"`,
	} {
		c := DefaultConfig()
		c.Kind = kind
		wanterr.Contains(t, c.Validate(), want)
		_, err := New(c)
		wanterr.Contains(t, err, want)
	}
}
