package http

import (
	"context"
	"encoding/json"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/a2a"
	fcluster "github.com/fangd/fangd/actors/cluster"
)

// noA2ADir is a task directory that knows no task: every request is
// answered where it arrives (ListTasks does not read it).
type noA2ADir struct{}

func (noA2ADir) NodeName() string { return "n1" }
func (noA2ADir) Task(context.Context, string) (a2a.ClusterTask, bool, error) {
	return a2a.ClusterTask{}, false, nil
}
func (noA2ADir) ContextNode(context.Context, string) (string, bool, error) { return "", false, nil }

// fakeA2APeer is another node's JSON-RPC ListTasks over ids (newest
// first), paged like a node's own list (the token is an index here); it
// records the forwarded-by and credential headers it was asked with.
func fakeA2APeer(t *testing.T, idsOf func() []string) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		var req struct {
			ID     any    `json:"id"`
			Method string `json:"method"`
			Params struct {
				PageSize  int    `json:"pageSize"`
				PageToken string `json:"pageToken"`
			} `json:"params"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		ids := idsOf()
		mu.Lock()
		seen = append(seen, r.Header.Get(forwardedHeader)+" "+r.Header.Get("Authorization")+" "+r.URL.Path+" "+req.Method)
		mu.Unlock()
		from, _ := strconv.Atoi(req.Params.PageToken)
		end := min(from+req.Params.PageSize, len(ids))
		tasks := []map[string]any{}
		for _, id := range ids[from:end] {
			tasks = append(tasks, map[string]any{"id": id, "contextId": "c-" + id, "status": map[string]any{"state": "TASK_STATE_COMPLETED"}})
		}
		next := ""
		if end < len(ids) {
			next = strconv.Itoa(end)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": map[string]any{
			"tasks": tasks, "totalSize": len(ids) - from, "pageSize": req.Params.PageSize, "nextPageToken": next}})
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(seen) }
}

type listPage struct {
	ids   []string
	total int
	next  string
	hdr   nethttp.Header
}

func listTasksRPC(t *testing.T, ts *a2aServer, params string, headers ...string) (listPage, map[string]any) {
	t.Helper()
	r := ts.authed(t, "POST", "/a2a", `{"jsonrpc":"2.0","id":7,"method":"ListTasks","params":`+params+`}`, headers...)
	if r.status != 200 {
		t.Fatalf("ListTasks: %d %s", r.status, r.body)
	}
	var out struct {
		ID     any            `json:"id"`
		Error  map[string]any `json:"error"`
		Result *struct {
			Tasks []struct {
				ID string `json:"id"`
			} `json:"tasks"`
			TotalSize     int    `json:"totalSize"`
			NextPageToken string `json:"nextPageToken"`
		} `json:"result"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("ListTasks: %v: %s", err, r.body)
	}
	if out.Result == nil {
		return listPage{hdr: r.header}, out.Error
	}
	p := listPage{total: out.Result.TotalSize, next: out.Result.NextPageToken, hdr: r.header}
	for _, tk := range out.Result.Tasks {
		p.ids = append(p.ids, tk.ID)
	}
	return p, nil
}

// In cluster mode a ListTasks on the shared endpoint lists every live
// node's tasks: this node's and a member's (asked with the caller's
// credential as a member's question), merged newest first and paged with
// the cluster's own token; a member that does not answer is named in
// X-Fangd-Missing-Nodes and the log, its tasks left out of totalSize; a
// member's question (forwarded) lists only that node's tasks; a token
// the cluster did not give out is invalid params.
func TestA2AListTasksAcrossCluster(t *testing.T) {
	t.Parallel()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()

	// Ids interleaved in time with this node's tasks, made below.
	var mu sync.Mutex
	var peerIDs []string
	peer, peerSeen := fakeA2APeer(t, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(peerIDs) })
	logs := &syncBuf{}
	ts := newA2AServerWith(t, func(s *Server) {
		s.a2aDir = noA2ADir{}
		s.hosts = testRouter(map[string]string{}, logs)
		s.log = s.log.Output(logs)
		s.cluster = fakeCluster{members: []fcluster.Member{
			{NodeName: "n1", Self: true},
			{NodeName: "n2", HTTPURL: peer.URL},
			{NodeName: "n3", HTTPURL: deadURL},
		}}
	})
	var local []string
	for i := 0; i < 3; i++ {
		r := ts.authed(t, "POST", "/a2a/tasks/send", `{"agent_id":"alpha","message":{"parts":[{"text":"hi"}]}}`)
		if r.status != 200 {
			t.Fatalf("send: %d %s", r.status, r.body)
		}
		local = append(local, jsonOf(t, r.body)["task_id"].(string))
		// UUIDv7 orders by millisecond: one peer task between each two.
		time.Sleep(2 * time.Millisecond)
		if i < 2 {
			mu.Lock()
			// A node lists newest first.
			peerIDs = append([]string{uuid.Must(uuid.NewV7()).String()}, peerIDs...)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}
	want := append(slices.Clone(local), peerIDs...)
	slices.Sort(want)
	slices.Reverse(want)

	var got []string
	token := ""
	for pages := 0; ; pages++ {
		params := `{"pageSize":2}`
		if token != "" {
			params = `{"pageSize":2,"pageToken":"` + token + `"}`
		}
		p, rerr := listTasksRPC(t, ts, params)
		if rerr != nil {
			t.Fatalf("page %d: %v", pages, rerr)
		}
		if p.total != 5 || p.hdr.Get("X-Fangd-Missing-Nodes") != "n3" || p.hdr.Get("X-Fangd-Partial") != "true" || p.hdr.Get("X-Fangd-Nodes") != "n1,n2" {
			t.Fatalf("page %d: totalSize %d, missing %q; want 5 (3 here, 2 on n2), n3", pages, p.total, p.hdr.Get("X-Fangd-Missing-Nodes"))
		}
		got = append(got, p.ids...)
		if p.next == "" {
			break
		}
		if pages > 3 {
			t.Fatalf("pages never end: %v", got)
		}
		token = p.next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("merged list %v, want newest first %v", got, want)
	}
	for _, s := range peerSeen() {
		if s != "n1 Bearer "+testKey+" /a2a ListTasks" {
			t.Fatalf("the member was asked as %q, want a member's question with the caller's credential", s)
		}
	}
	if !strings.Contains(logs.String(), `"node":"n3"`) {
		t.Fatalf("the missing member is not logged:\n%s", logs.String())
	}

	// A member's question: this node's own tasks only, its own token.
	p, rerr := listTasksRPC(t, ts, `{}`, forwardedHeader, "n2")
	if rerr != nil || p.total != 3 || len(p.ids) != 3 {
		t.Fatalf("forwarded ListTasks: %+v %v", p, rerr)
	}
	if _, rerr := listTasksRPC(t, ts, `{"pageToken":"`+local[0]+`"}`); rerr == nil || rerr["code"] != float64(-32602) {
		t.Fatalf("a node's token on the merged list: %v", rerr)
	}
}

// syncBuf is a log sink read while the server may write it.
type syncBuf struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return string(s.b) }
