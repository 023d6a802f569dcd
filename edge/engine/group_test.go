package engine

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// GroupMembers lists the live processes in process group pgid. Tests use
// it to prove that no runner outlives its server.
func GroupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && isZombie(st) {
				continue
			}
			out = append(out, pid)
		}
	}
	return out
}

// isZombie reads the state field of /proc/<pid>/stat.
func isZombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
