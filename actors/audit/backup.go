package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/fangd/fangd/store"
)

// BackupHeader is the header line of a fangd backup file (store.Backup):
// when it was taken and the audit anchor of the very snapshot it holds, so
// that a restore re-anchors the chain it restores, and checks it.
type BackupHeader struct {
	CreatedAt   string       `json:"created_at"`
	Version     string       `json:"fangd_version,omitempty"`
	AuditAnchor BackupAnchor `json:"audit_anchor"`
}

// BackupAnchor is Anchor in JSON.
type BackupAnchor struct {
	Length uint64 `json:"length"`
	Tip    string `json:"tip"`
}

// Backup writes a backup of db to w. The caller makes sure first that no
// anchor mismatch is pending (a running daemon's Log.Broken, a stopped
// one's CheckAnchor): the backup's anchor is the stored chain's tip, and
// would anchor a broken chain as if it were whole.
func Backup(db *store.DB, w io.Writer, version string) (BackupHeader, int64, error) {
	var h BackupHeader
	n, err := db.Backup(w, func(tx *store.Txn) ([]byte, error) {
		tip, err := TipIn(db.AuditLog(), tx)
		if err != nil {
			return nil, err
		}
		h = BackupHeader{CreatedAt: time.Now().UTC().Format(time.RFC3339), Version: version,
			AuditAnchor: BackupAnchor(tip)}
		return json.Marshal(h)
	})
	return h, n, err
}

// ParseBackupHeader reads a backup's header line.
func ParseBackupHeader(raw []byte) (BackupHeader, error) {
	var h BackupHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, fmt.Errorf("%w: its header is not fangd's (%v)", store.ErrBadBackup, err)
	}
	if len(h.AuditAnchor.Tip) != len(Genesis) {
		return h, fmt.Errorf("%w: its header has no audit anchor", store.ErrBadBackup)
	}
	return h, nil
}

// Anchor is the header's audit anchor.
func (h BackupHeader) Anchor() Anchor {
	return Anchor{Length: h.AuditAnchor.Length, Tip: h.AuditAnchor.Tip}
}
