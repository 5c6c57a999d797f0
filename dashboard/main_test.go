package dashboard_test

import (
	"os"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }
