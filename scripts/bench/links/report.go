package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// readmeSection names this benchmark's README section:
// <!-- bench:links:begin --> … <!-- bench:links:end -->.
const readmeSection = "links"

// Targets from the issue, in added time over the direct baseline.
const (
	warmSlack    = 500 * time.Microsecond // warm link: at most 1 RTT + this
	zeroRTTSlack = 2 * time.Millisecond   // new 0-RTT link: at most 1 RTT + this
	minRatio     = 2.5                    // at the largest delay, (c) added / (a) added
)

type row struct {
	delayMS int
	ping    time.Duration // the path's measured RTT
	ttft    [numPaths]time.Duration
}

// rtt is the path's round trip as a datagram sees it: the emulated delay
// both ways plus what the relay and waking idle processes add. The
// targets are held against it, as they would be against a real path's
// ping time.
func (r row) rtt() time.Duration { return r.ping }

func (r row) added(p int) time.Duration { return r.ttft[p] - r.ttft[direct] }

type results struct {
	samples int
	rows    []row
	took    time.Duration
	checks  []string // verdicts on what was measured
	// idleBytes and idlePackets are an idle warm link's UDP payload
	// bytes and datagrams per second, both directions.
	idleBytes, idlePackets float64
}

type report struct {
	text, markdown, summary string
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }

func (res results) report() report {
	var tb, md strings.Builder
	fmt.Fprintf(&tb, "links: time to first token of a forwarded stream, median of %d samples per cell (ms; added over B serving it itself)\n", res.samples)
	fmt.Fprintf(&tb, "%-10s %-8s %-10s", "delay", "RTT", "ping")
	for p := direct; p < numPaths; p++ {
		fmt.Fprintf(&tb, " | %-30s", pathNames[p])
	}
	tb.WriteString("\n")
	md.WriteString("| one-way delay | RTT | path ping | direct (B itself) | (a) warm QUIC link | (b) new QUIC link, 0-RTT | (c) HTTP/1.1, new TCP+TLS 1.3 | (d) HTTP/2, warm TCP+TLS |\n")
	md.WriteString("|---|---|---|---|---|---|---|---|\n")
	var verdicts []string
	for _, r := range res.rows {
		fmt.Fprintf(&tb, "%-10s %-8s %-10s", fmt.Sprintf("%d ms", r.delayMS), fmt.Sprintf("%d ms", 2*r.delayMS), ms(r.ping))
		fmt.Fprintf(&md, "| %d ms | %d ms | %s |", r.delayMS, 2*r.delayMS, ms(r.ping))
		for p := direct; p < numPaths; p++ {
			cell := ms(r.ttft[p])
			if p != direct {
				cell += " (+" + ms(r.added(p)) + ")"
			}
			fmt.Fprintf(&tb, " | %-30s", cell)
			fmt.Fprintf(&md, " %s |", cell)
		}
		tb.WriteString("\n")
		md.WriteString("\n")
		verdicts = append(verdicts,
			verdict(fmt.Sprintf("%d ms: warm link adds %s ms, target <= ping %s + %s", r.delayMS, ms(r.added(warmQUIC)), ms(r.ping), ms(warmSlack)), r.added(warmQUIC) <= r.rtt()+warmSlack),
			verdict(fmt.Sprintf("%d ms: new 0-RTT link adds %s ms, target <= ping %s + %s", r.delayMS, ms(r.added(zeroRTT)), ms(r.ping), ms(zeroRTTSlack)), r.added(zeroRTT) <= r.rtt()+zeroRTTSlack))
	}
	last := res.rows[len(res.rows)-1]
	ratio := float64(last.added(tcpNew)) / float64(max(last.added(warmQUIC), time.Microsecond))
	verdicts = append(verdicts, verdict(fmt.Sprintf("%d ms: (c) adds %.2fx what (a) adds, target >= %.1fx", last.delayMS, ratio, minRatio), ratio >= minRatio))
	for _, v := range append(res.checks, verdicts...) {
		tb.WriteString(v + "\n")
	}
	fmt.Fprintf(&tb, "idle warm link: %.0f bytes/s of UDP payload (+%.0f bytes/s of IP/UDP headers), %.1f datagrams/s, both directions (pings every 200ms, echoes, ACKs)\n",
		res.idleBytes, 28*res.idlePackets, res.idlePackets)
	fmt.Fprintf(&tb, "took %v on %d CPUs\n", res.took.Round(time.Millisecond), runtime.NumCPU())
	fmt.Fprintf(&md, "\nTime to first token in ms, median of %d samples per cell, with the time added over edge B serving the request itself in brackets. "+
		"A userspace relay (`scripts/wan`) adds the one-way delay in each direction; \"path ping\" is a bare datagram's round trip through the same kind of relay, which the targets (warm link adds at most 1 RTT + 0.5 ms, a new 0-RTT link 1 RTT + 2 ms) are held against. "+
		"Every sample follows an idle gap of one RTT, the baseline's too. Measured by `make bench-links` on %s, %d CPUs.\n",
		res.samples, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU())
	fmt.Fprintf(&md, "\nAn idle warm link costs %.0f bytes/s of UDP payload (%.1f datagrams/s, both directions): its liveness pings every 200 ms, their echoes and ACKs.\n", res.idleBytes, res.idlePackets)
	summary := fmt.Sprintf("links: delay_ms=%d warm_added_ms=%s zerortt_added_ms=%s tcp_tls_new_added_ms=%s ratio_tcp_over_warm=%.2f",
		last.delayMS, ms(last.added(warmQUIC)), ms(last.added(zeroRTT)), ms(last.added(tcpNew)), ratio)
	return report{text: tb.String(), markdown: md.String(), summary: summary}
}

func verdict(what string, ok bool) string {
	if ok {
		return "ok   " + what
	}
	return "MISS " + what
}
