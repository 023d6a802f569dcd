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
