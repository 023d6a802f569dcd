package main

import (
	"fmt"
	"math/rand/v2"
)

// Item is one request of a trace: which question, in which wording.
type Item struct {
	// Question is the question's rank: 0 is the most asked.
	Question int
	// Variant is the wording: 0 is the usual one, others paraphrase it.
	Variant int
	// Text is what the user typed.
	Text string
}

// TraceConfig shapes a generated FAQ-like trace.
type TraceConfig struct {
	// Seed makes the trace reproducible.
	Seed uint64
	// Questions is the number of distinct questions.
	Questions int
	// Requests is the trace's length.
	Requests int
	// ZipfS is the skew of question popularity (s > 1; higher is more
	// skewed). FAQ traffic is dominated by a few questions.
	ZipfS float64
	// Paraphrased is the share of requests worded otherwise than the
	// usual wording, among the paraphrases of their question.
	Paraphrased float64
}

// DefaultTraceConfig is 2,000 requests over 300 questions, Zipf s=1.1,
// a quarter of them paraphrased.
func DefaultTraceConfig() TraceConfig {
	return TraceConfig{Seed: 17, Questions: 300, Requests: 2000, ZipfS: 1.1, Paraphrased: 0.25}
}

// The FAQ's subjects and the wordings a question is asked in.
var (
	actions = []string{"reset my password", "change my email address", "cancel my subscription", "download an invoice",
		"enable two-factor authentication", "add a team member", "export my data", "delete my account", "update my card",
		"change my plan", "get a refund", "contact support", "rotate an API key", "raise my rate limit", "see my usage"}
	places    = []string{"on the web app", "in the mobile app", "from the API", "as an admin", "for a team workspace"}
	wordings  = []string{"How do I %s %s?", "how can i %s %s", "What's the way to %s %s?", "I need to %s %s - how?", "Steps to %s %s please"}
	numVaried = len(wordings) - 1
)

// question returns the text of question q in wording v.
func question(q, v int) string {
	a, p := actions[q%len(actions)], places[(q/len(actions))%len(places)]
	text := fmt.Sprintf(wordings[v], a, p)
	if n := q / (len(actions) * len(places)); n > 0 {
		text += fmt.Sprintf(" (case %d)", n) // beyond 75 questions, variants of the same ones
	}
	return text
}

// Generate returns a trace: questions drawn by Zipf rank, each worded
// the usual way or, with probability Paraphrased, one of its
// paraphrases at random.
func Generate(c TraceConfig) []Item {
	r := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	z := rand.NewZipf(rand.New(rand.NewPCG(c.Seed+1, c.Seed)), c.ZipfS, 1, uint64(c.Questions-1))
	out := make([]Item, c.Requests)
	for i := range out {
		q, v := int(z.Uint64()), 0
		if r.Float64() < c.Paraphrased {
			v = 1 + r.IntN(numVaried)
		}
		out[i] = Item{Question: q, Variant: v, Text: question(q, v)}
	}
	return out
}
