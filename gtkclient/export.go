package gtkclient

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/internal/inert"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// connRecord is one exported connection: every column the page knows.
type connRecord struct {
	Time     string `json:"time"` // RFC 3339, local time with its offset
	Program  string `json:"program"`
	PID      uint32 `json:"pid"`
	UID      uint32 `json:"uid"`
	User     string `json:"user"`
	Host     string `json:"host"`
	Address  string `json:"address"`
	Port     uint32 `json:"port"`
	Protocol string `json:"protocol"`
	Action   string `json:"action"`
	// DecidedBy in the words of the page's "Decided by" column.
	DecidedBy string `json:"decided_by"`
	RuleID    string `json:"rule_id"`
	// Rule is the deciding rule as the rules list describes it.
	Rule string `json:"rule"`
}

var csvHeader = []string{"time", "program", "pid", "uid", "user", "host", "address", "port", "protocol", "action",
	"decided_by", "rule_id", "rule"}

func (r connRecord) csv() []string {
	return []string{r.Time, csvCell(r.Program), strconv.FormatUint(uint64(r.PID), 10), strconv.FormatUint(uint64(r.UID), 10),
		csvCell(r.User), csvCell(r.Host), csvCell(r.Address), strconv.FormatUint(uint64(r.Port), 10), r.Protocol, r.Action,
		csvCell(r.DecidedBy), csvCell(r.RuleID), csvCell(r.Rule)}
}

// csvCell makes an untrusted text inert for a terminal (inert.String) and
// for a spreadsheet: a cell starting with = + - @ (a host name can) would
// be read as a formula, so it gets a leading quote, as OWASP advises.
func csvCell(s string) string {
	s = inert.String(s)
	if s != "" && strings.ContainsRune("=+-@", rune(s[0])) {
		return "'" + s
	}
	return s
}

// exportFormat is a file format connections are exported in.
type exportFormat int

const (
	exportCSV exportFormat = iota
	exportJSON
)

// exportFormatFor is the format path's extension names, and whether it
// names one.
func exportFormatFor(path string) (exportFormat, bool) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return exportCSV, true
	case ".json":
		return exportJSON, true
	}
	return exportCSV, false
}

// encodeConnections writes records in format.
func encodeConnections(records []connRecord, format exportFormat) ([]byte, error) {
	var b bytes.Buffer
	if format == exportJSON {
		// One record a line, each made inert (inert.JSON escapes every
		// line break, so it cannot take indented JSON).
		b.WriteString("[")
		for i, r := range records {
			line, err := json.Marshal(r)
			if err != nil {
				return nil, fmt.Errorf("encode json: %w", err)
			}
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n  ")
			b.Write(inert.JSON(line))
		}
		b.WriteString("\n]\n")
		return b.Bytes(), nil
	}
	w := csv.NewWriter(&b)
	w.Write(csvHeader)
	for _, r := range records {
		w.Write(r.csv())
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("encode csv: %w", err)
	}
	return b.Bytes(), nil
}

// writeFileAtomic replaces path with data: a reader never sees half a
// file, and a failed export leaves what was there.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after the rename, nothing is there
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// shownRecords are the page's rows, newest first, as export records.
func (m *mainWindow) shownRecords() []connRecord {
	var out []connRecord
	it, ok := m.histStore.GetIterFirst()
	for ok {
		if e := m.conn.rows[m.rowID(it)]; e != nil {
			out = append(out, m.connRecord(e))
		}
		ok = m.histStore.IterNext(it)
	}
	return out
}

func (m *mainWindow) connRecord(e *uiv1.HistoryEntry) connRecord {
	p, f := e.GetProcess(), e.GetFlow()
	user, err := m.a.userName(p.GetUid())
	if err != nil {
		user = ""
	}
	by, _ := m.decidedBy(e)
	if e.GetDecidedBy() == "" {
		by = ""
	}
	var rule string
	if r := m.ruleByID(entryRuleID(e)); r != nil {
		rule = capitalize(actionName(r.GetAction())) + " " + ruleSentence(r, m.a.now(), m.a.loc)
	}
	return connRecord{
		Time: e.GetTime().AsTime().In(m.a.loc).Format(time.RFC3339), Program: programKey(p), PID: p.GetPid(),
		UID: p.GetUid(), User: user, Host: e.GetHost(), Address: f.GetDstIp(), Port: f.GetDstPort(), Protocol: protoName(f),
		Action: actionName(e.GetAction()), DecidedBy: by, RuleID: entryRuleID(e), Rule: rule,
	}
}

// exportConnections asks where to save the rows shown, and in which
// format: the file's extension says, else the format chosen below the
// file chooser.
func (m *mainWindow) exportConnections() {
	fc, err := gtk.FileChooserDialogNewWith2Buttons("Export connections", m.win, gtk.FILE_CHOOSER_ACTION_SAVE,
		"_Cancel", gtk.RESPONSE_CANCEL, "_Save", gtk.RESPONSE_ACCEPT)
	if err != nil {
		return
	}
	fc.SetDoOverwriteConfirmation(true)
	fc.SetCurrentName("bastion-connections.csv")
	extra := mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	formatLabel, _ := gtk.LabelNewWithMnemonic("_Format:")
	format := mustCombo()
	format.Append("csv", "CSV (a spreadsheet)")
	format.Append("json", "JSON")
	format.SetActiveID("csv")
	formatLabel.SetMnemonicWidget(format)
	// Choosing a format renames the file to its extension.
	format.Connect("changed", func() {
		name := fc.GetCurrentName()
		if _, ok := exportFormatFor(name); ok {
			name = strings.TrimSuffix(name, filepath.Ext(name))
		}
		fc.SetCurrentName(name + "." + format.GetActiveID())
	})
	extra.PackStart(formatLabel, false, false, 0)
	extra.PackStart(format, false, false, 0)
	extra.ShowAll()
	fc.SetExtraWidget(extra)
	m.exportChooser = fc
	fc.Connect("response", func(_ *gtk.FileChooserDialog, resp gtk.ResponseType) {
		path := fc.GetFilename()
		f := exportCSV
		if format.GetActiveID() == "json" {
			f = exportJSON
		}
		fc.Destroy()
		m.exportChooser = nil
		if resp != gtk.RESPONSE_ACCEPT || path == "" {
			return
		}
		if byExt, ok := exportFormatFor(path); ok {
			f = byExt
		} else if f == exportJSON {
			path += ".json"
		} else {
			path += ".csv"
		}
		m.exportConnectionsTo(path, f)
	})
	fc.Show()
}

// exportConnectionsTo writes the rows shown to path and says how it went.
func (m *mainWindow) exportConnectionsTo(path string, f exportFormat) {
	records := m.shownRecords()
	data, err := encodeConnections(records, f)
	if err == nil {
		err = writeFileAtomic(path, data)
	}
	if err != nil {
		m.showNotice(gtk.MESSAGE_ERROR, exportFailure(path, err), nil)
		return
	}
	n := "1 connection"
	if len(records) != 1 {
		n = fmt.Sprintf("%d connections", len(records))
	}
	m.showNotice(gtk.MESSAGE_INFO, fmt.Sprintf("Saved %s to %s.", n, inert.String(path)), nil)
}

// exportFailure says why the connections could not be saved, and what to
// do about it.
func exportFailure(path string, err error) string {
	reason := err.Error()
	var errno syscall.Errno // under the *fs.PathError or *os.LinkError
	if errors.As(err, &errno) {
		reason = errno.Error()
	}
	hint := "Choose another file."
	switch {
	case errors.Is(err, fs.ErrPermission):
		hint = "Choose a folder you can write to."
	case errors.Is(err, fs.ErrNotExist):
		hint = "Choose a folder that exists."
	}
	return fmt.Sprintf("Could not save the connections to %s: %s. %s", inert.String(path), inert.String(reason), hint)
}
