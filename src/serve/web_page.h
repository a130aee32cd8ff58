// The chat page `lamina serve` answers at `/`: one self-contained HTML document (no files to
// install, nothing fetched from elsewhere) that talks to the same /v1/chat/completions API with
// streamed replies.
#pragma once

namespace lamina {

const char* chat_page_html();

}  // namespace lamina
