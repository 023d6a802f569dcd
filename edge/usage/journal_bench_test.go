package usage

import (
	"path/filepath"
	"testing"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
)

// BenchmarkJournalAppend is what Record pays to make a record survive a
// SIGKILL: sizing and marshalling it into the mapped segment.
func BenchmarkJournalAppend(b *testing.B) {
	j, _, err := openJournal(filepath.Join(b.TempDir(), JournalFile), 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer j.close()
	r := &usagev1.Record{Schema: 1, RequestId: "01JDX3V0Q9Z7Y6W5V4T3S2R1P0", Tenant: "acme", Key: "key-acme-1", Model: "gpt-4o-mini",
		Target: "provider/openai", TargetKind: "provider", Node: "edge-eu-1", Region: "eu-west-1", TokensIn: 123, TokensOut: 456,
		CostNanoUsd: 123456, Status: 200, LatencyUs: 12345, UnixMs: 1764680000000, Stream: true, Revision: 42}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := j.append(r); err != nil {
			j.zero(j.swap())
			j.zero(j.swap())
		}
	}
}
