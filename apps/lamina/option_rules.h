// The kind and range of every numeric command-line option, declared once for all commands.
// Args checks each value given (on the command line, in a --config YAML or a recipe step) and
// each default against this table before a command does any work, so `--lr nan`, `--threads 0`
// or `--beta1 1.5` fail at once with the option named, never deep inside training.
#pragma once
#include <string>

namespace lamina {

// Throws lamina::Error "--NAME: ..." when value breaks the rule declared for option `name`
// (options without a rule are text and are checked by the command). `command` selects rules
// whose meaning differs between commands.
void check_option_value(const std::string& command, const std::string& name,
                        const std::string& value);

}  // namespace lamina
