package pgcluster

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestMissingBinariesSayWhatToDo(t *testing.T) {
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), BinDir: t.TempDir()})
	if !errors.Is(err, ErrBinariesMissing) {
		t.Fatalf("error %v", err)
	}
	for _, want := range []string{"apt-get install postgresql", "--database-url"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}
}
