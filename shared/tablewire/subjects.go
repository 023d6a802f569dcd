package tablewire

// NATS subjects of the table protocol; proto/table/v1/table.proto says
// what travels on each.
const (
	// SubjectUpdate carries a TableUpdate per revision, from the leader.
	SubjectUpdate = "meridian.v1.table.update"
	// SubjectSnapshot is the request-reply subject any control node
	// answers with a SnapshotReply.
	SubjectSnapshot = "meridian.v1.table.snapshot"
	// SubjectHeartbeat carries the leader's Heartbeat.
	SubjectHeartbeat = "meridian.v1.table.heartbeat"
	// SubjectApplied carries edges' AppliedReports.
	SubjectApplied = "meridian.v1.edge.applied"
	// SnapshotQueue is the queue group control nodes answer snapshot
	// requests in, so one of them replies.
	SnapshotQueue = "meridian-control"
)

// subjectToken turns a node ID into one NATS subject token: node IDs may
// hold '.', NATS' token separator, but never '_', so the mapping is
// one-to-one.
func subjectToken(node string) string {
	b := []byte(node)
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

// ReportSubject is the subject an edge with its own NATS identity
// publishes its AppliedReports on; its permissions allow no other.
// Control nodes subscribe to SubjectApplied + ".>".
func ReportSubject(node string) string { return SubjectApplied + "." + subjectToken(node) }

// InboxPrefix is the reply-subject prefix of an edge with its own NATS
// identity: it may subscribe only below it, so it cannot read the
// replies meant for other edges.
func InboxPrefix(node string) string { return "_INBOX." + subjectToken(node) }
