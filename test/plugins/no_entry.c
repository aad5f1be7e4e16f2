/* A shared object without the entry point: the loader must reject it. */
int tidegate_something_else(void);

int tidegate_something_else(void)
{
    return 0;
}
