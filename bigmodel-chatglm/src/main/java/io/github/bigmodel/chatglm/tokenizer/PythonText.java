package io.github.bigmodel.chatglm.tokenizer;

/** Python {@code str} behaviour the THUDM code relies on (whitespace per {@code str.isspace}). */
final class PythonText {

    private PythonText() {
    }

    /** Python's {@code str.isspace()} for one code point. */
    static boolean isSpace(int cp) {
        if (cp == 0x1C || cp == 0x1D || cp == 0x1E || cp == 0x1F || cp == 0x85) {
            return true;
        }
        if (cp >= 0x09 && cp <= 0x0D) {
            return true;
        }
        int type = Character.getType(cp);
        return type == Character.SPACE_SEPARATOR || type == Character.LINE_SEPARATOR
                || type == Character.PARAGRAPH_SEPARATOR;
    }

    static String strip(String s) {
        return rstrip(lstrip(s));
    }

    static String lstrip(String s) {
        int i = 0;
        while (i < s.length()) {
            int cp = s.codePointAt(i);
            if (!isSpace(cp)) {
                break;
            }
            i += Character.charCount(cp);
        }
        return s.substring(i);
    }

    static String rstrip(String s) {
        int j = s.length();
        while (j > 0) {
            int cp = s.codePointBefore(j);
            if (!isSpace(cp)) {
                break;
            }
            j -= Character.charCount(cp);
        }
        return s.substring(0, j);
    }
}
