package http

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/a2a"
)

// A2A ListTasks in cluster mode (docs/cluster.md "A2A tasks across the
// cluster"): a task is stored on the node that runs it, so a ListTasks on
// the shared endpoint asks every live member for its tasks with the same
// filters (the caller's credential and forwardedHeader, so each member
// answers from its own store and scopes the list to the same caller),
// merges them newest first (task ids are UUIDv7: time-ordered across
// nodes) and pages the merged list. The page token is this cluster's own
// ("cluster:<offset>"), not a node's. The A2A response has no place for
// coverage (a strict client rejects unknown fields), so it is in headers:
// X-Fangd-Nodes (the nodes that answered), and X-Fangd-Partial: true with
// X-Fangd-Missing-Nodes naming a member that did not answer (also
// logged); totalSize counts only the nodes that answered. A per-agent endpoint
// lists that agent's tasks, all on its node: it is not fanned out.

// a2aListPeerPage is the page size asked of each node (ListTasks' most).
const a2aListPeerPage = 100

// a2aClusterTokenPrefix marks a page token of the merged list.
const a2aClusterTokenPrefix = "cluster:"

// a2aListed is one task of a node's answer, kept as the node wrote it.
type a2aListed struct {
	id  string
	raw json.RawMessage
}

// a2aListFromCluster reports whether serveRPC's request is a ListTasks to
// fan out: cluster mode, the shared endpoint, not a member's question.
func (s *Server) a2aListFromCluster(ctx *fasthttp.RequestCtx, method, agentID string) bool {
	return method == "ListTasks" && agentID == "" && s.a2aDir != nil && s.usageFromCluster(ctx)
}

// a2aListCluster answers a ListTasks from every node's tasks. It reports
// false, having written nothing, for a request the local binding answers
// (one it would refuse: its error is the answer).
func (s *Server) a2aListCluster(ctx *fasthttp.RequestCtx) bool {
	var rpc struct {
		ID     any                  `json:"id"`
		Params sdk.ListTasksRequest `json:"params"`
	}
	if json.Unmarshal(ctx.PostBody(), &rpc) != nil {
		return false
	}
	p := rpc.Params
	if p.PageSize < 0 || p.PageSize > 100 || (p.HistoryLength != nil && *p.HistoryLength < 0) {
		return false
	}
	size := p.PageSize
	if size == 0 {
		size = 50
	}
	offset := 0
	if p.PageToken != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(p.PageToken, a2aClusterTokenPrefix))
		if !strings.HasPrefix(p.PageToken, a2aClusterTokenPrefix) || err != nil || n < 0 {
			writeJSON(ctx, fasthttp.StatusOK, a2a.NewRPCError(rpc.ID, sdk.ErrInvalidParams,
				"pageToken is not one this cluster's ListTasks gave out (they look like cluster:<n>)", nil))
			return true
		}
		offset = n
	}
	// Every node is asked for the first offset+size tasks of its list.
	want := offset + size
	q := p
	q.PageSize, q.PageToken = a2aListPeerPage, ""
	collect := func(list func(q sdk.ListTasksRequest) (json.RawMessage, error)) ([]a2aListed, int, error) {
		var got []a2aListed
		total := -1
		for {
			raw, err := list(q)
			if err != nil {
				return nil, 0, err
			}
			var page struct {
				Tasks         []json.RawMessage `json:"tasks"`
				TotalSize     int               `json:"totalSize"`
				NextPageToken string            `json:"nextPageToken"`
			}
			if err := json.Unmarshal(raw, &page); err != nil {
				return nil, 0, err
			}
			if total < 0 {
				// Later pages count what is left after their token.
				total = page.TotalSize
			}
			for _, t := range page.Tasks {
				var head struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(t, &head); err != nil {
					return nil, 0, err
				}
				got = append(got, a2aListed{id: head.ID, raw: t})
			}
			if len(got) >= want || page.NextPageToken == "" {
				return got, total, nil
			}
			q.PageToken = page.NextPageToken
		}
	}

	type nodeList struct {
		tasks []a2aListed
		total int
	}
	body := func(q sdk.ListTasksRequest) []byte {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": q})
		return b
	}
	others, cov := fanOut(s, ctx, "A2A tasks", func(_ peerGet, post peerPost) (nodeList, error) {
		tasks, total, err := collect(func(q sdk.ListTasksRequest) (json.RawMessage, error) {
			var res struct {
				Result json.RawMessage   `json:"result"`
				Error  *a2a.RPCErrorBody `json:"error"`
			}
			if err := post("/a2a", body(q), &res); err != nil {
				return nil, err
			}
			if res.Error != nil {
				return nil, fmt.Errorf("ListTasks: %d %s", res.Error.Code, res.Error.Message)
			}
			return res.Result, nil
		})
		return nodeList{tasks, total}, err
	})
	// This node's own list, in process.
	lctx := s.reqCtx(ctx)
	h := s.deps.A2A.Handler("")
	mine, mineTotal, err := collect(func(q sdk.ListTasksRequest) (json.RawMessage, error) {
		res, err := h.ListTasks(lctx, &q)
		if err != nil {
			return nil, err
		}
		return json.Marshal(res)
	})
	if err != nil {
		// The binding answers with its own error.
		return false
	}
	all, total := mine, mineTotal
	for _, o := range others {
		all = append(all, o.tasks...)
		total += o.total
	}
	sort.Slice(all, func(i, j int) bool { return all[i].id > all[j].id })
	page := []json.RawMessage{}
	for i := offset; i < len(all) && i < offset+size; i++ {
		page = append(page, all[i].raw)
	}
	next := ""
	if offset+size < total && len(page) == size {
		next = a2aClusterTokenPrefix + strconv.Itoa(offset+size)
	}
	ctx.Response.Header.Set("X-Fangd-Nodes", strings.Join(cov.Nodes, ","))
	if cov.Partial {
		ctx.Response.Header.Set("X-Fangd-Partial", "true")
		ctx.Response.Header.Set("X-Fangd-Missing-Nodes", strings.Join(cov.MissingNodes, ","))
		if cov.ClusterError != "" {
			s.log.Warn().Msg("cluster: A2A ListTasks lists only this node's tasks: " + cov.ClusterError)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"jsonrpc": "2.0", "id": rpc.ID, "result": map[string]any{
		"tasks": page, "totalSize": total, "pageSize": size, "nextPageToken": next}})
	return true
}
