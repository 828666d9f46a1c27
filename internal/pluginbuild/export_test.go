package pluginbuild

// TargetOf is targetOf, for the tests.
var TargetOf = targetOf
