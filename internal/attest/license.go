package attest

import (
	"regexp"
	"slices"
	"strings"

	"github.com/github/go-spdx/v2/spdxexp/spdxlicenses"
)

// idstringRE matches an SPDX idstring, the shape of a licence identifier
// and of what follows "LicenseRef-" (SPDX 2.3, annex D).
var idstringRE = regexp.MustCompile(`^[A-Za-z0-9.+-]+$`)

// spdxID is the identifier of a licence in an SPDX licence expression:
// its SPDX identifier if the SPDX licence list has it (active or
// deprecated, as the list spells it), else a LicenseRef- as given, or
// made from its short or full name (ref is then true, and the document
// must say what the reference means).
func spdxID(l License) (id string, ref bool) {
	if ok, canonical := spdxlicenses.IsActiveLicense(l.SPDX); ok {
		return canonical, false
	}
	if ok, canonical := spdxlicenses.IsDeprecatedLicense(l.SPDX); ok {
		return canonical, false
	}
	if strings.HasPrefix(l.SPDX, "LicenseRef-") && idstringRE.MatchString(l.SPDX) {
		return l.SPDX, true
	}
	name := l.ShortName
	if name == "" {
		name = l.FullName
	}
	if name == "" {
		name = l.SPDX
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r < 128 && idstringRE.MatchString(string(r)):
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" {
		s = "unknown"
	}
	return "LicenseRef-" + s, true
}

// expression is the SPDX licence expression of a package's licences:
// NOASSERTION for none, else their identifiers joined by AND (nixpkgs'
// meta.license lists every licence that applies to a package).
func expression(ls []License) string {
	if len(ls) == 0 {
		return "NOASSERTION"
	}
	var ids []string
	for _, l := range ls {
		id, _ := spdxID(l)
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return strings.Join(ids, " AND ")
}

// licenseName is how a licence is named where an SPDX identifier does not
// fit (CycloneDX's license.name): its full name, else its short name.
func licenseName(l License) string {
	switch {
	case l.FullName != "":
		return l.FullName
	case l.ShortName != "":
		return l.ShortName
	}
	return l.SPDX
}
